"""k-nearest neighbours: a cheap instance-based reference."""

from sklearn.neighbors import KNeighborsClassifier

from fer_lab.models import register
from fer_lab.models.classical import ClassicalClassifier


@register("knn")
class KNNClassifier(ClassicalClassifier):
    """k-NN vote, by distance or uniform."""

    def __init__(self, features="pca", pca_components=0.95, hog_cell=8, n_neighbors=10,
                 weights="distance", seed=0):
        self.features = features
        self.pca_components = pca_components
        self.hog_cell = hog_cell
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.seed = seed

    def _classifier(self):
        return KNeighborsClassifier(n_neighbors=self.n_neighbors, weights=self.weights, n_jobs=-1)
