"""`kubevolve operator`: run the Kubernetes operator (kopf) that turns EvolutionRuns into Jobs."""

from __future__ import annotations

from typing import Annotated

import typer

from kubevolve.cli.common import fail


def operator(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch only this namespace (repeatable; default: all)."),
    ] = None,
    image: Annotated[str | None, typer.Option(help="Default image of the step Jobs.")] = None,
    store_url: Annotated[
        str | None, typer.Option("--store", envvar="KUBEVOLVE_STORE", help="Default store URL.")
    ] = None,
    task_root: Annotated[
        str | None, typer.Option(help="Folder in the image that relative task paths resolve against.")
    ] = None,
    trainjobs: Annotated[
        bool,
        typer.Option("--trainjobs", help="Watch Kubeflow Trainer TrainJobs (where Trainer is installed)."),
    ] = False,
    liveness: Annotated[
        str | None, typer.Option(help="Liveness endpoint, e.g. http://0.0.0.0:8080/healthz.")
    ] = None,
    peering: Annotated[
        str | None,
        typer.Option(help="kopf peering name: several replicas, one active (default: standalone)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator until SIGTERM (settings also from KUBEVOLVE_OPERATOR_* variables, KUBEVOLVE_STORE and
    KUBEVOLVE_METRICS_PORT)."""
    from kubevolve.runtime.kubernetes.config import OperatorConfig
    from kubevolve.runtime.kubernetes.main import run_operator

    try:
        config = OperatorConfig.from_env(
            image=image,
            store_url=store_url,
            task_root=task_root,
            trainjobs=trainjobs or None,
            namespaces=tuple(namespace) if namespace else None,
        )
    except ValueError as err:
        fail(str(err))
    run_operator(config, liveness=liveness, verbose=verbose, peering=peering)
