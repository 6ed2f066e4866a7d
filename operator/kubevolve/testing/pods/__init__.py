"""Pods run in locally built images, as a kubelet runs them, with no container daemon (runner.py): what a
container takes from its spec (spec.py), its image mounted (images.py), the pod's shared namespaces
(sandbox.py), its volumes (volumes.py) and Secrets (secrets.py)."""
