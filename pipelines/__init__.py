"""Data, transfer matrices, studies, reports and the ``forgelab`` command line."""
