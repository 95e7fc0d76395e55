"""Train (or warm-start) the base diffusion model as a Prefect flow."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from diffpath.model.train import TrainConfig, train


@task
def train_task(
    config: TrainConfig,
    out: str,
    resume: bool,
    device: str | None,
    max_minutes: float | None,
    progress: bool,
) -> str:
    """Run the training loop; checkpoints and the final model go under `out`."""
    log = get_run_logger()
    every = max(1, config.steps // 20)

    def report(step: int, total: int, loss: float) -> None:
        if step % every == 0:
            log.info("step %d/%d loss %.4f", step, total, loss)

    if not progress:
        return train(config, out, resume, device, max_minutes, progress=report)
    from tqdm.auto import tqdm

    with tqdm(total=config.steps, desc="train", unit="step") as bar:

        def show(step: int, total: int, loss: float) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.refresh()
            report(step, total, loss)

        return train(config, out, resume, device, max_minutes, progress=show)


@flow(name="train-base-model")
def train_flow(
    config: TrainConfig,
    out: str,
    resume: bool = False,
    device: str | None = None,
    max_minutes: float | None = None,
    progress: bool = False,
) -> str:
    """Train the base model described by `config` into `out` (diffusers layout)."""
    return train_task(config, out, resume, device, max_minutes, progress)
