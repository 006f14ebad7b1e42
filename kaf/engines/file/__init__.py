"""
The file engine: one append-only file per log in a data folder
(L{kaf.engines.file.store.Store}, L{kaf.engines.file.log.Log}).
"""
