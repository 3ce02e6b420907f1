"""The MLflow model of a serving bundle: a code-based pyfunc model (MLflow logs this file, not a pickle).

``load_context`` loads the bundle (the model's ``bundle`` artifact) into a ``ServingEngine``;
``predict`` takes one request per row (a pandas DataFrame or a list of dicts with the fields of
``popsteer.serve.schemas.RecommendRequest``) and returns one response per row, as POST /recommend does.
"""

import math

import mlflow
from mlflow.pyfunc import PythonModel


def _clean(row: dict) -> dict:
    """A request row without its empty cells (a DataFrame fills missing fields with NaN or None)."""
    return {k: v for k, v in row.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}


class PopSteerModel(PythonModel):
    def load_context(self, context) -> None:
        from popsteer.serve.engine import ServingEngine

        self.engine = ServingEngine(context.artifacts["bundle"])

    def predict(self, context, model_input, params=None) -> list:
        from popsteer.serve.schemas import RecommendRequest

        rows = model_input.to_dict("records") if hasattr(model_input, "to_dict") else list(model_input)
        return [self.engine.recommend(RecommendRequest.model_validate(_clean(dict(r)))) for r in rows]


mlflow.models.set_model(PopSteerModel())
