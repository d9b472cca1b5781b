@calibration @local @postgres
Feature: The harness measures outages and losses of known size accurately
  firedrill's RTO and RPO are only worth something if they can be trusted. Here the drills' own canary
  probes (100 writes a second, 0.5 s deadline) face outages and losses whose true size is recorded
  independently of them, on the same monotonic clock, and what they measure must match.
  The outages here are shorter than the probe's deadline, so the probe's own call sees the end of the
  outage; longer ones add a fresh connection to the error. `firedrill calibrate` runs the full set
  (many trials, several lengths, reset cuts, Redis too) and reports p50/p95/max.

  Scenario: A freeze of exactly 400 ms of the PostgreSQL primary
    When the PostgreSQL primary is frozen for exactly 400 ms
    Then the measured RTO is within 50 ms of the true outage

  Scenario: A network cut of exactly 400 ms between the probe and PostgreSQL
    When the network between the probe and PostgreSQL is blackholed for exactly 400 ms
    Then the measured RTO is within 50 ms of the true outage

  Scenario: A known loss of 5 acknowledged writes
    When replication to the standby is cut, 5 writes are acknowledged by the primary alone, the primary is killed and the standby promoted
    Then the drill reports exactly 5 lost writes with their sequence numbers
