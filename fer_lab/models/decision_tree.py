"""Decision tree (the seed's baseline: 0.29)."""

from sklearn.tree import DecisionTreeClassifier

from fer_lab.models import register
from fer_lab.models.classical import ClassicalClassifier


@register("tree")
class TreeClassifier(ClassicalClassifier):
    """A single CART tree on the chosen features."""

    def __init__(self, features="pca", pca_components=0.95, hog_cell=8, criterion="gini",
                 max_depth=None, min_samples_leaf=1, class_weight=None, seed=0):
        self.features = features
        self.pca_components = pca_components
        self.hog_cell = hog_cell
        self.criterion = criterion
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.class_weight = class_weight
        self.seed = seed

    def _classifier(self):
        return DecisionTreeClassifier(criterion=self.criterion, max_depth=self.max_depth,
                                      min_samples_leaf=self.min_samples_leaf,
                                      class_weight=self.class_weight, random_state=self.seed)
