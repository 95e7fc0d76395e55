"""HTML reports of screen, audit and evaluate runs, written beside their outputs."""

from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from diffpath.config import FeatureConfig
from diffpath.io.runs import point_latest
from diffpath.io.storage import join, read_json
from diffpath.reports import pages
from diffpath.reports.history import write_history
from diffpath_tasks.features import worker_model
from diffpath_tasks.retry import RETRY, transient_failure


@task(**RETRY, retry_condition_fn=transient_failure)
def screen_report_task(
    out: str,
    reference_uri: str,
    config: FeatureConfig,
    model: str,
    device: str | None = None,
    history: str | None = None,
) -> str:
    """The screening report, with error maps of the top flagged images from the model at
    `model` and the trend of a dated screen's nights."""
    unet = worker_model(model, config.dtype, device, compile=False)
    return pages.screen_report(out, reference_uri, unet, history)


@task(**RETRY, retry_condition_fn=transient_failure)
def history_task(template: str) -> str | None:
    """history.parquet beside a dated screen's folders, rebuilt from their summaries."""
    return write_history(template)


@task(**RETRY, retry_condition_fn=transient_failure)
def audit_report_task(out: str) -> str:
    return pages.audit_report(out)


@task(**RETRY, retry_condition_fn=transient_failure)
def evaluate_report_task(metrics_uri: str, out: str) -> str:
    return pages.evaluate_report(metrics_uri, out)


@task(**RETRY, retry_condition_fn=transient_failure)
def publish_task(out: str) -> list[str]:
    """Show a run's summary and its top flagged images in the Prefect UI; returns its alerts."""
    summary = read_json(join(out, "summary.json"))
    create_markdown_artifact(pages.summary_markdown(summary), key="diffpath-summary")
    create_table_artifact(pages.flagged_rows(out), key="diffpath-top-flagged")
    return summary.get("alerts", [])


@task(**RETRY, retry_condition_fn=transient_failure)
def point_latest_task(template: str, out: str, when: datetime) -> str | None:
    """latest.json beside a run's dated output folder."""
    return point_latest(template, out, when)
