"""HTML reports of screen, audit and evaluate runs, written beside their outputs."""

from __future__ import annotations

from prefect import task

from diffpath import report
from tasks.retry import RETRY, transient_failure


@task(**RETRY, retry_condition_fn=transient_failure)
def screen_report_task(out: str, reference_uri: str) -> str:
    return report.screen_report(out, reference_uri)


@task(**RETRY, retry_condition_fn=transient_failure)
def audit_report_task(out: str) -> str:
    return report.audit_report(out)


@task(**RETRY, retry_condition_fn=transient_failure)
def evaluate_report_task(metrics_uri: str, out: str) -> str:
    return report.evaluate_report(metrics_uri, out)
