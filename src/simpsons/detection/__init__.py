"""Boxes and names of every character in a picture: an anchor-free (CenterNet-style) detector.

Its modules, one concern each: ``placement`` (a picture's place on the square canvas the network sees),
``targets`` (boxes -> what the network learns), ``decode`` (what it answers -> boxes), ``mosaic`` (training
canvases composed from several boxed pictures), ``model`` (the network and its loss), ``bundle`` (the
detector bundle file and its ONNX export), ``detector`` (``Detector``: a bundle that answers pictures),
``drawing`` (boxes and names drawn on a picture), ``evaluation`` (COCO mAP and the verdict on each top box),
``report`` (the evaluation's figures), ``training`` and ``commands`` (the command line).
"""
