"""Service levels from what runs recorded: the SLO report, and the spend tenant budgets read."""

from stead.slo.report import Figures, SloReport, compute_report
from stead.slo.spend import TenantSpend, tenant_spend_this_month
from stead.slo.window import InvalidWindow, parse_since

__all__ = [
    "Figures",
    "InvalidWindow",
    "SloReport",
    "TenantSpend",
    "compute_report",
    "parse_since",
    "tenant_spend_this_month",
]
