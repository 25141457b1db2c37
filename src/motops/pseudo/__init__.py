"""Pseudo-labels for unlabelled footage: the champion labels it, people review what it is unsure of.

* :mod:`motops.pseudo.footage`: an unlabelled batch (a video file, or a folder of frames with
  its frame rate) read, checked and written as a MOTChallenge sequence folder;
* :mod:`motops.pseudo.labeller`: the champion's detector at a larger input size, tracking
  forward and backward, short gaps interpolated, a track-consistency filter; MOT ground truth
  whose uncertain boxes carry the consider flag 0 (training and scoring ignore them);
* :mod:`motops.pseudo.review`: the uncertain spans as a CVAT "MOT 1.1" task, and a corrected
  export of it put back into the batch.
"""
