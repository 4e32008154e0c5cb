"""The stage cache (docs/cache.md): skip a command stage that already passed on the same inputs.

One concern a module: `spec` (the ``cache`` declaration), `globs`, `inputs` (which files),
`tree` (walking below the root without following links), `gitfiles` (git in the background),
`digests` and `statcache` (what each file holds, re-read only when its stat moved), `gitstat`
(git vouching for unchanged tracked files), `fingerprint` (the inputs of a stage), `key`
(the stage key and why it missed), `entry`, `store`, `restore` and `latest` (the cache
directory), `packfile` (the binary record format of the stat cache and `latest`), `errors`.
"""
