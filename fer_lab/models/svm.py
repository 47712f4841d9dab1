"""Support-vector machine (the seed's best classical model: 0.44 on PCA-253)."""

from sklearn.svm import SVC

from fer_lab.models import register
from fer_lab.models.classical import ClassicalClassifier


@register("svm")
class SVMClassifier(ClassicalClassifier):
    """RBF (or other kernel) SVC; probabilities are a softmax of its one-vs-rest margins,
    since Platt scaling (``probability=True``) would refit it five times."""

    def __init__(self, features="pca", pca_components=0.95, hog_cell=8, kernel="rbf", C=1.0,
                 gamma="scale", class_weight=None, seed=0):
        self.features = features
        self.pca_components = pca_components
        self.hog_cell = hog_cell
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.seed = seed

    def _classifier(self):
        return SVC(kernel=self.kernel, C=self.C, gamma=self.gamma, class_weight=self.class_weight,
                   cache_size=1000, random_state=self.seed)
