"""Multinomial logistic regression: a cheap linear reference."""

from sklearn.linear_model import LogisticRegression

from fer_lab.models import register
from fer_lab.models.classical import ClassicalClassifier


@register("logreg")
class LogisticClassifier(ClassicalClassifier):
    """L2-regularised softmax regression."""

    def __init__(self, features="pca", pca_components=0.95, hog_cell=8, C=1.0,
                 class_weight=None, seed=0):
        self.features = features
        self.pca_components = pca_components
        self.hog_cell = hog_cell
        self.C = C
        self.class_weight = class_weight
        self.seed = seed

    def _classifier(self):
        return LogisticRegression(C=self.C, class_weight=self.class_weight, max_iter=1000,
                                  random_state=self.seed)
