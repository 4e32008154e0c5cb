"""Task evidence: checklists mirrored across files, proved by run manifests (docs/run-records.md, README "Task evidence workflow")."""
