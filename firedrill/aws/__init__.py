"""AWS support: boto3 sessions from a profile, error translation, guardrails, cleanup and plans.

The adapters themselves live beside the local ones in `firedrill.targets` (`aws_rds`, `aws_rds_restore`,
`aws_elasticache`); docs/aws.md says how to point firedrill at an AWS staging account.
"""
