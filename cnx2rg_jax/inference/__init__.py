"""A trained run put to use on images: loading it from its workdir (trained), reports from images
(generate), a split scored beside the baselines and the val evaluation during training (evaluate),
what it was trained on (provenance), how unlike its training images an input is (ood), and both
facts attached to every report (run_facts)."""
