@s3 @backup
Feature: Objects in a versioned backup bucket are restored to a point in time after a mistake
  The platform keeps its backups in S3 buckets with versioning and lifecycle rules, and promises that
  objects deleted or overwritten by mistake are restored from their versions: every object back with
  exactly the content it had (its SHA-256 and size, against a manifest taken before the mistake) within
  15 minutes of the mistake (RTO), and at most 5 minutes of writes before it lost (RPO).
  Before any fault, the bucket must be able to keep that promise: versioning on, noncurrent versions
  kept at least 30 days, replication healthy where the environment says it replicates. A bucket that
  fails is refused, and no disaster is injected into it.
  The drill writes only its own objects, under <prefix>/firedrill-drill/<run id>/, and deletes every
  version and delete marker there at the end of every drill. Objects outside that prefix are never
  touched.

  @local
  Scenario: Objects are deleted by mistake
    Given a versioned backup bucket in the drill environment
    And 40 objects of 256 KiB under the drill prefix
    And 2 objects of 12 MiB uploaded in 5 MiB parts under the drill prefix
    When 8 objects are deleted by mistake
    And the objects are restored to just before the mistake
    Then every object has the checksum and size it had at the restore point
    And exactly the 8 damaged objects are restored
    And the objects are restored and verified within 15 minutes
    And at most 5 minutes of object writes before the mistake are lost
    And the drill prefix is deleted with every version and delete marker in it

  @local
  Scenario: Objects are overwritten by mistake
    Given a versioned backup bucket in the drill environment
    And 40 objects of 256 KiB under the drill prefix
    And 2 objects of 12 MiB uploaded in 5 MiB parts under the drill prefix
    When 6 objects are overwritten by mistake
    And the objects are restored to just before the mistake
    Then every object has the checksum and size it had at the restore point
    And exactly the 6 damaged objects are restored
    And the objects are restored and verified within 15 minutes
    And at most 5 minutes of object writes before the mistake are lost
    And the drill prefix is deleted with every version and delete marker in it

  @local
  Scenario: A whole prefix is wiped by mistake
    Given a versioned backup bucket in the drill environment
    And 40 objects of 256 KiB under the drill prefix
    And 2 objects of 12 MiB uploaded in 5 MiB parts under the drill prefix
    When every object under the drill prefix is deleted by mistake
    And the objects are restored to just before the mistake
    Then every object has the checksum and size it had at the restore point
    And exactly the 42 damaged objects are restored
    And the objects are restored and verified within 15 minutes
    And at most 5 minutes of object writes before the mistake are lost
    And the drill prefix is deleted with every version and delete marker in it

  @local
  Scenario: The objects are restored to a noted time, before later legitimate writes
    Given a versioned backup bucket in the drill environment
    And 40 objects of 256 KiB under the drill prefix
    And 2 objects of 12 MiB uploaded in 5 MiB parts under the drill prefix
    When a restore point is noted
    And 5 new objects are written and 3 objects are overwritten after the restore point
    And 6 objects are deleted by mistake
    And the objects are restored to the noted restore point
    Then every object has the checksum and size it had at the restore point
    And the 8 objects written after the restore point are reported lost, by name
    And exactly the 11 damaged objects are restored
    And the objects are restored and verified within 15 minutes
    And at most 5 minutes of object writes before the mistake are lost
    And the drill prefix is deleted with every version and delete marker in it

  @local
  Scenario: A restore that lists many versions per object is reported as a finding
    Given a versioned backup bucket in the drill environment
    And 24 objects of 64 KiB, each written 15 times, under the drill prefix
    When 4 objects are overwritten by mistake
    And the objects are restored to just before the mistake
    Then every object has the checksum and size it had at the restore point
    And exactly the 4 damaged objects are restored
    And a slow restore is reported as a finding when more than 10 versions are listed per restored object
    And the objects are restored and verified within 15 minutes
    And the drill prefix is deleted with every version and delete marker in it

  @local
  Scenario: A bucket without versioning is refused before any fault
    Given a backup bucket without versioning in the drill environment
    And 10 objects of 64 KiB under the drill prefix
    When 3 objects are deleted by mistake
    Then the drill refuses the bucket because versioning is not enabled
    And no disaster is injected
    And the drill prefix is deleted with every version and delete marker in it

  @aws
  Scenario: Objects deleted by mistake in the AWS backup bucket are restored
    Given a versioned backup bucket in the drill environment
    And 20 objects of 1 MiB under the drill prefix
    And 1 object of 16 MiB uploaded in 8 MiB parts under the drill prefix
    When 5 objects are deleted by mistake
    And the objects are restored to just before the mistake
    Then every object has the checksum and size it had at the restore point
    And exactly the 5 damaged objects are restored
    And the objects are restored and verified within 15 minutes
    And at most 5 minutes of object writes before the mistake are lost
    And the drill prefix is deleted with every version and delete marker in it
