from pytest_bdd import scenarios

scenarios("calibration.feature")
