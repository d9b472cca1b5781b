"""firedrill: disaster-recovery drills with measured RTO/RPO and auditor-grade evidence."""

__version__ = "0.1.0"
