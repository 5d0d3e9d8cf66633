"""Distillation from teacher embedders into a student network (used by ``training.loop``):
``views`` (the deterministic augmentations both see), ``targets`` (the cached teacher targets and
student crops), ``dataset`` (what a training step reads) and ``loss`` (the terms the student learns).

Teacher targets are centred (the teacher's mean vector removed) and renormalised: dlib's
descriptors sit in a narrow cone (two random faces have cosine ~0.84), so matching raw vectors
teaches mostly the shared mean direction."""

from .dataset import DistillFaces, drawn_view, select_training_faces, views_read
from .loss import DistillLoss, MultiTeacherLoss
from .targets import StudentCrops, TeacherTargets, centred_targets, unit_targets
from .views import ViewParams, render_view, student_view, teacher_view, view_params

__all__ = ["DistillFaces", "DistillLoss", "MultiTeacherLoss", "StudentCrops", "TeacherTargets", "ViewParams", "centred_targets",
           "drawn_view", "render_view", "select_training_faces", "student_view", "teacher_view", "unit_targets", "view_params",
           "views_read"]
