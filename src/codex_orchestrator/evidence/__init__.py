"""Task evidence: checklists mirrored across files, proved by run manifests (spec section 9)."""
