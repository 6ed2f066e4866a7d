"""The Kubernetes runtime: the EvolutionRun CRD and a kopf operator that runs the engine's steps as Jobs.

Nothing here is imported by the engine. The operator is level-triggered: each reconcile of a run recomputes
what to do from the store (nodes, run record) and the Jobs the run owns, so a restarted operator loses nothing
and starts nothing twice (Job names are deterministic; a create that finds the Job already there is a no-op).

Modules, one concern each: `crd` (schema from RunSpec), `names` (labels, deterministic names), `jobs` and
`trainjob` (what a pod runs), `handover` (what an evaluation pod is given), `results` (what it hands back),
`observe` (what a Job's status means), `snapshot` (what the store says),
`plan` (the pure decision), `status` (conditions, phase), `kube` (API calls), `reconcile` (one pass),
`handlers/` (kopf wiring).
"""

GROUP = "kubevolve.io"
VERSION = "v1alpha1"
PLURAL = "evolutionruns"
KIND = "EvolutionRun"
API_VERSION = f"{GROUP}/{VERSION}"

RUN_LABEL = "kubevolve.io/run"
ROLE_LABEL = "kubevolve.io/role"
CANDIDATE_LABEL = "kubevolve.io/candidate"
ATTEMPT_LABEL = "kubevolve.io/attempt"
NODE_ANNOTATION = "kubevolve.io/node-id"
QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
NETWORK_LABEL = "kubevolve.io/network"  # "none" on evaluation pods, saying so (policies select by role)
TRAINJOB_LABEL = "kubevolve.io/trainjob"  # on every pod of a TrainJob: its name (its peer NetworkPolicy)
MPI_JOB_LABEL = "kubevolve.io/mpi-job"  # on a TrainJob's pods: `launcher` or `node` (where the judge is)
FINALIZER = "kubevolve.io/cleanup"
STORE_KEY_SECRET = "kubevolve-store"  # a lab's own store key, in its namespace (labkeys.py)
STORE_KEY = "api-key"

TRAINER_GROUP = "trainer.kubeflow.org"
TRAINER_VERSION = "v1alpha1"
TRAINJOB_PLURAL = "trainjobs"
TRAINING_RUNTIME_PLURAL = "trainingruntimes"
