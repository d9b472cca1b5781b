from pytest_bdd import scenarios

scenarios("failover.feature")
