"""The code that talks to a Ray cluster: a local head (local.py) and job submission (jobs.py); beside it the
cluster definitions (launcher YAML for AWS/GCP, KubeRay)."""
