@postgres @failover
Feature: PostgreSQL survives the loss of its primary
  The platform promises a Multi-AZ PostgreSQL database that accepts writes again within 15 minutes
  of losing its primary (RTO) and loses at most 5 minutes of acknowledged writes (RPO).
  While each drill runs, a canary client writes numbered records many times a second and reads
  them back afterwards, so both figures are measured from the client's side, not assumed.

  Background:
    Given a PostgreSQL primary with a streaming standby in the drill environment
    And canary writes at 50 per second

  @local
  Scenario: The primary crashes
    When the primary is killed
    And the standby is promoted
    Then writes succeed again within 15 minutes
    And at most 5 minutes of acknowledged writes are lost
    And no acknowledged write is lost

  @local
  Scenario: The primary is shut down for maintenance
    When the primary is stopped gracefully
    And the standby is promoted
    Then writes succeed again within 15 minutes
    And at most 5 minutes of acknowledged writes are lost
    And no acknowledged write is lost

  @local
  Scenario: The primary freezes for 3 seconds and comes back
    When the primary is frozen for 3 seconds
    Then writes succeed again on the same primary within 15 minutes
    And no acknowledged write is lost

  @aws
  Scenario: RDS Multi-AZ forced failover
    When the primary is rebooted with failover
    And the platform promotes the standby
    Then writes succeed again within 15 minutes
    And at most 5 minutes of acknowledged writes are lost
    And no acknowledged write is lost

  @local
  Scenario: The network between the application and the primary is cut for 2 seconds
    When the network between the application and the primary is cut for 2 seconds
    Then writes succeed again on the same primary within 15 minutes
    And no acknowledged write is lost
