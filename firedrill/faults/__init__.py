"""Faults firedrill injects itself, as opposed to ones it asks a server or a cloud API for."""

from firedrill.faults.proxy import CutMode, CutWindow, FaultProxy

__all__ = ["CutMode", "CutWindow", "FaultProxy"]
