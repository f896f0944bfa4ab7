"""Policies: YAML files that turn guard scores into decisions, per direction and per tenant.

``schema`` (the ``Policy`` model), ``loader`` (files -> ``PolicySet``), ``store`` (reload),
``plan`` (which checks to run), ``decide`` (results -> ``Decision``), ``tenancy`` (who uses which).
"""

from guard.policy.decide import decide
from guard.policy.loader import (
    PolicyIssue,
    PolicyLoadError,
    PolicySet,
    load_policy_dir,
    load_policy_file,
    load_policy_files,
    policy_from_data,
)
from guard.policy.plan import CheckPlan, PlannedScan, plan_checks
from guard.policy.schema import Policy
from guard.policy.store import PolicyStore, ReloadEvent

__all__ = [
    "CheckPlan",
    "PlannedScan",
    "Policy",
    "PolicyIssue",
    "PolicyLoadError",
    "PolicySet",
    "PolicyStore",
    "ReloadEvent",
    "decide",
    "load_policy_dir",
    "load_policy_file",
    "load_policy_files",
    "plan_checks",
    "policy_from_data",
]
