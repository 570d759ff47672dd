"""Storage: run folders (``runs``), safe output folders (``folders``), writer locks (``locking``), atomic files and
JSON (``files``) and resumable parameter sweeps (``sweep``). Nothing here is lost or mixed: every file is written
to a temporary name and renamed, and one process writes a folder at a time."""
