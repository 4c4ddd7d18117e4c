"""Reports: the HTML page of a study, its figures, training curves."""
