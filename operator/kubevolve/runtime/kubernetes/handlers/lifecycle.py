"""Operator start: kopf settings, and the shared context (config, API client, stores) in the memo.

The context is closed by whoever started the operator, once kopf has returned: a cleanup handler would run
while store reads may still be finishing in worker threads."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from kubevolve.runtime.kubernetes import (
    FINALIZER,
    RUN_LABEL,
    TRAINER_GROUP,
    TRAINER_VERSION,
    TRAINJOB_PLURAL,
)
from kubevolve.runtime.kubernetes.config import OperatorConfig
from kubevolve.runtime.kubernetes.context import OperatorContext
from kubevolve.runtime.kubernetes.kube import Kube


def configure(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = FINALIZER
    # kopf's own bookkeeping goes to annotations, so the status holds only the run's status
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.kubevolve.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="kopf.kubevolve.io", key="last-handled-configuration"
    )
    # handler logs become events only for warnings; the milestones are the operator's own events
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # The API server sends only the run's Jobs: kopf's `labels=` on a handler filters in the operator, after
    # every Job of the cluster has been listed and watched; these selectors go into the list and watch
    # requests themselves (kopf 1.45: settings.watching.label_selectors -> `labelSelector=`).
    for resource in (("batch", "v1", "jobs"), (TRAINER_GROUP, TRAINER_VERSION, TRAINJOB_PLURAL)):
        settings.watching.label_selectors[resource] = RUN_LABEL


def register(registry: kopf.OperatorRegistry) -> None:
    @kopf.on.startup(id="startup", registry=registry)
    async def kubevolve_startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        configure(settings)
        if getattr(memo, "kubevolve", None) is None:
            memo.kubevolve = OperatorContext(OperatorConfig.from_env(), Kube.from_environment())
