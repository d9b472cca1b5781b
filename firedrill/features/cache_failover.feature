@redis @cache @local
Feature: The Redis cache survives the loss of its master
  The platform promises Redis with replication and automatic failover by Sentinel: writes succeed
  again within 15 minutes of losing the master (RTO) and at most 5 minutes of acknowledged writes
  are lost (RPO). A canary client finds the master through Sentinel, as applications do, writes
  numbered records many times a second and reads them back from the new master afterwards, so both
  figures are measured from the client's side. After each scenario the old master rejoins as a
  replica, and the next scenario starts only once the staging is steady again.

  Scenario: The master crashes
    Given a Redis master with two replicas watched by three Sentinels
    And canary writes at 50 per second
    When the master is killed
    And Sentinel promotes a replica
    Then writes succeed again within 15 minutes
    And at most 5 minutes of acknowledged writes are lost
    And no acknowledged write is lost

  # Finding, measured on every run: Sentinel does not demote the old master of a planned failover;
  # it converts it only ~10 s later. A client already connected to it (redis-py through Sentinel
  # does not re-ask until its connection breaks) keeps getting acknowledgements there, and those
  # writes are discarded when the old master resyncs from the new one: split brain, about 10 s of
  # acknowledged writes lost. The Then-steps state the platform's promise for Redis, RPO 5 minutes,
  # which that loss still meets, not "no acknowledged write is lost": asynchronous replication never
  # promised zero loss. So the verdict follows the promise, and the evidence and report show the loss
  # as a finding (lost seqs, stale acknowledgements, RPO window), never hidden.
  # @sentinel: also drilled on a Sentinel deployment firedrill did not start (SENTINEL FAILOVER only).
  @sentinel
  Scenario: A planned switchover
    Given a Redis master with two replicas watched by three Sentinels
    And canary writes at 50 per second
    When Sentinel is asked for a planned failover
    And Sentinel promotes a replica
    Then writes succeed again within 15 minutes
    And at most 5 minutes of acknowledged writes are lost

  # The same crash under production-like load: 8 writers at 2000 operations a second (20% reads)
  # find the master through Sentinel as applications do, and every write they get acknowledged is
  # read back from the new master. min-replicas-to-write 1 makes a master refuse writes while no
  # replica is connected to it.
  @load
  Scenario: The master crashes under load
    Given a Redis master with two replicas watched by three Sentinels
    And canary writes at 50 per second
    And Redis min-replicas-to-write is 1
    And a background load of 8 writers at 2000 writes per second with 20% reads and 512-byte rows
    When the master is killed
    And Sentinel promotes a replica
    Then writes succeed again within 15 minutes
    And at most 5 minutes of acknowledged writes are lost

  # 5 s is well past down-after-milliseconds (1 s on the staging) and past the ~3 s Sentinel needs
  # to promote a replica, so the master wakes up demoted in all but name and the writes resume on
  # another node. The probe's connection to the stalled master times out, so no client is left
  # writing to it when it wakes: nothing acknowledged is lost here, unlike the switchover.
  Scenario: The master stalls for longer than down-after-milliseconds and resumes
    Given a Redis master with two replicas watched by three Sentinels
    And canary writes at 50 per second
    When the master is stalled for 5 seconds and then resumed
    And Sentinel promotes a replica
    Then writes succeed again within 15 minutes
    And at most 5 minutes of acknowledged writes are lost
    And no acknowledged write is lost

  Scenario: AOF with appendfsync always keeps every acknowledged write through a crash
    Given a Redis master with AOF persistence and appendfsync always
    And canary writes at 500 per second
    When the master is killed after 1000 acknowledged writes and restarted
    Then writes succeed again on the same master within 15 minutes
    And no acknowledged write is lost
    And the restarted master reports how many acknowledged writes survived

  # everysec promises at most about one second of acknowledged writes (two when an fsync is slow),
  # so that is the objective, not zero. A SIGKILL keeps the kernel's page cache, so this crash
  # usually loses nothing; the evidence reports the count either way, and says a host crash could
  # lose more.
  Scenario: AOF with appendfsync everysec loses at most two seconds of writes through a crash
    Given a Redis master with AOF persistence and appendfsync everysec
    And canary writes at 500 per second
    When the master is killed after 1000 acknowledged writes and restarted
    Then writes succeed again on the same master within 15 minutes
    And at most 2 seconds of acknowledged writes are lost
    And the restarted master reports how many acknowledged writes survived
