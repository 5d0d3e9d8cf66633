"""Evaluation: the LFW 10-fold protocol (``lfw``), MegaFace-style identification/verification
(``megaface``), metrics (``metrics``), the per-image feature cache (``features``) and reports
(``report``). Evaluation code talks to models only through the Embedder protocol."""
