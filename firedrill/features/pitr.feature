@postgres @pitr @local
Feature: PostgreSQL is restored to a point in time after a destructive mistake
  The platform promises point-in-time recovery from base backups and a continuous WAL archive:
  after a mistake destroys data, the database can be restored, into a new server next to the damaged
  one, to a moment before the mistake. The restored server accepts writes, its data verified, within
  15 minutes of the restore start (RTO), and at most 5 minutes of data before the mistake are lost (RPO).
  While each drill runs, a canary client writes numbered records many times a second. Their commit
  times prove that the restore holds every record up to the target and none after it; an application
  table of known content proves the business data came back exactly as it was at the target.
  The restored server is removed at the end of every drill.

  Background:
    Given a PostgreSQL database with a WAL archive and a base backup in the drill environment
    And an application table "orders" with 5000 rows of known content
    And canary writes at 50 per second with commit timestamps

  Scenario: A table is dropped by mistake
    When the table "orders" is dropped by mistake
    And the database is restored to just before the mistake
    Then the restored database holds every canary record committed before the target and none after it
    And the table "orders" has the row count and checksum it had at the target
    And the restored database accepts writes within 15 minutes
    And at most 5 minutes of data before the mistake are lost
    And the newest base backup is at most 24 hours old
    And no restored server is left behind

  Scenario: Every row of a table is deleted by a DELETE without a WHERE clause
    When every row of "orders" is deleted by a DELETE without a WHERE clause
    And the database is restored to just before the mistake
    Then the restored database holds every canary record committed before the target and none after it
    And the table "orders" has the row count and checksum it had at the target
    And the restored database accepts writes within 15 minutes
    And at most 5 minutes of data before the mistake are lost
    And the newest base backup is at most 24 hours old
    And no restored server is left behind

  Scenario: The database is restored to a noted time, before later legitimate changes
    When a recovery point is noted
    And 1000 more rows are added to "orders"
    And every row of "orders" is deleted by a DELETE without a WHERE clause
    And the database is restored to the noted time
    Then the restored database holds every canary record committed up to the target and none after it
    And the table "orders" has the row count and checksum it had at the target
    And the restored database accepts writes within 15 minutes
    And at most 5 minutes of data before the mistake are lost
    And no restored server is left behind

  Scenario: The database is restored to a noted WAL position (LSN)
    When a recovery point is noted
    And 1000 more rows are added to "orders"
    And the table "orders" is dropped by mistake
    And the database is restored to the noted WAL position
    Then the restored database holds every canary record committed before the target and none after it
    And the table "orders" has the row count and checksum it had at the target
    And the restored database accepts writes within 15 minutes
    And at most 5 minutes of data before the mistake are lost
    And no restored server is left behind

  Scenario: A restore to a time before the base backup is refused
    When the database is restored to a time 1 hour before the base backup
    Then the restore is refused because the target is before the backup
    And no restored server is left behind

  Scenario: A restore to a time beyond the archived WAL is refused
    When the database is restored to a time 1 hour beyond the archived WAL
    Then the restore is refused because the target is beyond the archived WAL
    And no restored server is left behind
