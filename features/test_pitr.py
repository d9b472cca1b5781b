from pytest_bdd import scenarios

scenarios("pitr.feature")
