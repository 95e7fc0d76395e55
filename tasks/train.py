"""Train the base model as a task: the loop's progress in the run's logs (and a bar in the
CLI), its loss curve drawn beside the model at every save."""

from __future__ import annotations

from prefect import get_run_logger, task

from diffpath.io.storage import join, write_bytes
from diffpath.model.train import TrainConfig, train
from diffpath.reports.render import loss_curve_png


def draw_loss(out: str, history: list[dict[str, float]]) -> None:
    """`out`/loss.png: the run's loss curve so far."""
    write_bytes(join(out, "loss.png"), loss_curve_png(history))


@task
def train_task(
    config: TrainConfig,
    out: str,
    resume: bool,
    device: str | None,
    max_minutes: float | None,
    progress: bool,
) -> str:
    """Run the training loop; checkpoints, the model and its loss curve go under `out`."""
    log = get_run_logger()
    every = max(1, config.steps // 20)

    def report(step: int, total: int, loss: float) -> None:
        if step % every == 0:
            log.info("step %d/%d loss %.4f", step, total, loss)

    if not progress:
        return train(config, out, resume, device, max_minutes, progress=report, on_save=draw_loss)
    from tqdm.auto import tqdm

    with tqdm(total=config.steps, desc="train", unit="step") as bar:

        def show(step: int, total: int, loss: float) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.refresh()
            report(step, total, loss)

        return train(config, out, resume, device, max_minutes, progress=show, on_save=draw_loss)
