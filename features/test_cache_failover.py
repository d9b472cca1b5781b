from pytest_bdd import scenarios

scenarios("cache_failover.feature")
