"""What a model is trained to do: its output layer, loss, metrics and the gate's headline metric.

A workload picks an objective; the model builder, the training loop, evaluation, registration and
the summary ask it instead of assuming one. Keras is imported inside the methods, so a workload
module (and a DAG file that names one) stays cheap to import.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any


class Objective(abc.ABC):
    name: str
    output_name: str  # the SavedModel's and the MLflow signature's output
    headline: str  # the metric the promotion gate compares
    higher_is_better: bool
    train_metric_name: str  # the metric logged per epoch during training

    @abc.abstractmethod
    def output(self, z: Any, stats: dict[str, Any]) -> Any:
        """The model's output from its logit ``z`` (shape [N, 1]): a layer without trainable weights, so
        the members of an ensemble share it and their mean logit maps to the output the same way."""

    @abc.abstractmethod
    def per_example_loss(self, y: Any, p: Any) -> Any:
        """Loss per example (shape [batch]); the loop averages it over the global batch."""

    @abc.abstractmethod
    def train_metric(self) -> Any:
        """A Keras metric that syncs across replicas and workers."""

    @abc.abstractmethod
    def eval_metrics(self) -> Any:
        """A streaming metrics object with ``update(y, p)``, ``result() -> dict`` and ``reset()``."""

    @abc.abstractmethod
    def describe(self, metrics: dict[str, Any]) -> str:
        """One line of metrics for a human."""

    @abc.abstractmethod
    def baselines(self, categorical: list[bool], seed: int, unordered: list[bool] | None = None) -> dict[str, Any]:
        """{name: a no-argument factory of an unfitted scikit-learn estimator} for the reference models
        evaluate trains beside the network; ``categorical`` flags every categorical column (one-hot for a
        linear model), ``unordered`` the ones without an order (the ordered variant of gradient boosting treats
        the others as numbers; default: all of ``categorical``)."""

    @abc.abstractmethod
    def baseline_predict(self, model: Any, x: Any) -> Any:
        """A fitted baseline's output in the same units as the network's (probability, label units)."""

    def gain(self, new: dict[str, Any], champion: dict[str, Any]) -> float:
        """How much better the new model is on the headline metric (positive = better), at 1e-6.

        Histogram AUCs of one model differ in the 7th digit between runs, hence the rounding.
        """
        diff = new[self.headline] - champion[self.headline]
        return round(diff if self.higher_is_better else -diff, 6)


@dataclasses.dataclass(frozen=True)
class BinaryClassification(Objective):
    """A 0/1 label; the model outputs the probability of 1. Gate on AUC."""

    name: str = "binary_classification"
    output_name: str = "probability"
    headline: str = "auc"
    higher_is_better: bool = True
    train_metric_name: str = "auc"

    def output(self, z: Any, stats: dict[str, Any]) -> Any:
        import keras

        # float32 whatever the dtype policy: a float16 probability rounds away what AUC ranks on
        return keras.layers.Activation("sigmoid", name=self.output_name, dtype="float32")(z)

    def per_example_loss(self, y: Any, p: Any) -> Any:
        import keras

        return keras.losses.binary_crossentropy(y, p)

    def train_metric(self) -> Any:
        import keras

        return keras.metrics.AUC(name="train_auc")

    def eval_metrics(self) -> Any:
        from retrainer.spec.metrics import BinaryMetrics

        return BinaryMetrics()

    def baselines(self, categorical: list[bool], seed: int, unordered: list[bool] | None = None) -> dict[str, Any]:
        from sklearn.ensemble import HistGradientBoostingClassifier
        from sklearn.linear_model import LogisticRegression

        ordered = categorical if unordered is None else unordered
        return {
            "hist_gradient_boosting": lambda: HistGradientBoostingClassifier(
                categorical_features=categorical, random_state=seed
            ),
            # ordered categories (month, hour) as numbers: a value rare in training sits beside its neighbours
            "hist_gradient_boosting_ordered": lambda: HistGradientBoostingClassifier(
                categorical_features=ordered, random_state=seed
            ),
            "logistic_regression": lambda: _linear_pipeline(LogisticRegression(max_iter=1000), categorical),
        }

    def baseline_predict(self, model: Any, x: Any) -> Any:
        return model.predict_proba(x)[:, 1]

    def describe(self, metrics: dict[str, Any]) -> str:
        return "AUC {auc:.4f}  log loss {log_loss:.4f}  accuracy {accuracy:.4f}  Brier {brier:.4f}".format(**metrics)


@dataclasses.dataclass(frozen=True)
class Regression(Objective):
    """A real-valued label. The logit is a standardised value, rescaled with the training
    split's label mean and variance (saved with the features), so the model outputs the label's units
    and starts near the mean. Squared-error loss; gate on RMSE (lower is better)."""

    unit: str = ""
    name: str = "regression"
    output_name: str = "prediction"
    headline: str = "rmse"
    higher_is_better: bool = False
    train_metric_name: str = "rmse"

    def output(self, z: Any, stats: dict[str, Any]) -> Any:
        import keras

        label = stats["label"]
        std = max(label["variance"], 1e-12) ** 0.5
        return keras.layers.Rescaling(scale=std, offset=label["mean"], name=self.output_name, dtype="float32")(z)

    def per_example_loss(self, y: Any, p: Any) -> Any:
        import keras

        return keras.losses.mean_squared_error(y, p)

    def train_metric(self) -> Any:
        import keras

        return keras.metrics.RootMeanSquaredError(name="train_rmse")

    def eval_metrics(self) -> Any:
        from retrainer.spec.metrics import RegressionMetrics

        return RegressionMetrics()

    def baselines(self, categorical: list[bool], seed: int, unordered: list[bool] | None = None) -> dict[str, Any]:
        from sklearn.ensemble import HistGradientBoostingRegressor
        from sklearn.linear_model import Ridge

        ordered = categorical if unordered is None else unordered
        return {
            "hist_gradient_boosting": lambda: HistGradientBoostingRegressor(
                categorical_features=categorical, random_state=seed
            ),
            # ordered categories (month, hour) as numbers: a value rare in training sits beside its neighbours
            "hist_gradient_boosting_ordered": lambda: HistGradientBoostingRegressor(
                categorical_features=ordered, random_state=seed
            ),
            "ridge_regression": lambda: _linear_pipeline(Ridge(), categorical),
        }

    def baseline_predict(self, model: Any, x: Any) -> Any:
        return model.predict(x)

    def describe(self, metrics: dict[str, Any]) -> str:
        u = f" {self.unit}" if self.unit else ""
        return "RMSE {rmse:.2f}{u}  MAE {mae:.2f}{u}  bias {bias:+.2f}{u}  R² {r2:.4f}".format(u=u, **metrics)


def _linear_pipeline(estimator: Any, categorical: list[bool]) -> Any:
    """Numeric columns mean-imputed and standardised, categorical codes one-hot (missing = its own level)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [j for j, c in enumerate(categorical) if not c]
    coded = [j for j, c in enumerate(categorical) if c]
    columns = ColumnTransformer(
        [
            ("numeric", make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()), numeric),
            (
                "categorical",
                make_pipeline(
                    SimpleImputer(strategy="constant", fill_value=-1), OneHotEncoder(handle_unknown="ignore")
                ),
                coded,
            ),
        ]
    )
    return make_pipeline(columns, estimator)
