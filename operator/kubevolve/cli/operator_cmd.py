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
    health: Annotated[
        str | None,
        typer.Option(help="Serve /healthz (liveness) and /readyz (readiness) here, e.g. 0.0.0.0:8080."),
    ] = None,
    lease: Annotated[
        str | None,
        typer.Option(
            help="Leader election: the Lease whose holder alone reconciles; other replicas stand by "
            "(default: none, a single replica)."
        ),
    ] = None,
    lease_namespace: Annotated[
        str | None, typer.Option(help="The Lease's namespace (default: KUBEVOLVE_OPERATOR_LEASE_NAMESPACE).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator until SIGTERM (settings also from KUBEVOLVE_OPERATOR_* variables, KUBEVOLVE_STORE and
    KUBEVOLVE_METRICS_PORT). Exits 1 when it loses the leader Lease."""
    from kubevolve.runtime.kubernetes.config import OperatorConfig
    from kubevolve.runtime.kubernetes.health import parse_address
    from kubevolve.runtime.kubernetes.main import run_operator

    try:
        config = OperatorConfig.from_env(
            image=image,
            store_url=store_url,
            task_root=task_root,
            trainjobs=trainjobs or None,
            namespaces=tuple(namespace) if namespace else None,
            lease_name=lease,
            lease_namespace=lease_namespace,
        )
        if health:
            parse_address(health)
    except ValueError as err:
        fail(str(err))
    if not run_operator(config, health=health, verbose=verbose):
        fail("lost the leader Lease: stopped reconciling; restart to stand by for it again")
