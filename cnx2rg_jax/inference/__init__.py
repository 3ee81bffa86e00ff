"""A trained run put to use on images: what it was trained on (provenance) and how unlike its
training images an input is (ood)."""
