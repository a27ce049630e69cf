"""The structural check of a contract: pydantic models kept equal to ``schemas/contract.schema.json``.

``pv validate`` asks one question of them, ``conforms(data)``: is the file
structurally valid? pydantic answers it in compiled code, far faster than the
jsonschema walk, which runs only when the answer is no, to name every violation.
Nothing reads contracts through these models: what commands read is the one
view in ``pv.contract.model``.

The JSON schema is the source of truth; these models mirror it field for field
(required keys, types, enums, which sections forbid unknown keys), and
``tests/contract/test_contract_models.py`` proves the two agree. Models are
strict: YAML's ``1.0`` stays a float and is not quietly turned into a string,
exactly as the schema sees it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

StrList = list[str]


class _NoNulls(BaseModel):
    """Optional keys may be absent but not null, as in the schema.

    ``references:`` with nothing after it is usually a slip; the schema types
    each optional key without ``null``, so the models refuse an explicit null
    for every declared field except the free-form (``Any``) ones.
    """

    #: Declared fields that must not be null (all but the free-form ``Any`` ones).
    _not_null: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._not_null = tuple(n for n, f in cls.model_fields.items() if f.annotation is not Any)

    @model_validator(mode="before")
    @classmethod
    def _refuse_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name in cls._not_null:
                if name in data and data[name] is None:
                    raise ValueError(f"{name} may be absent but not null")
            for key in data:
                if type(key) is not str:
                    # YAML allows `1:` as a key; JSON (and so the schema) sees the string "1".
                    return {k if isinstance(k, str) else str(k): v for k, v in data.items()}
        return data


class _Open(_NoNulls):
    """Unknown keys are allowed (real contracts carry many sections of their own)."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)


class Metadata(_Open):
    version: str | float
    description: str
    references: StrList | None = None
    id: str | None = None
    kind: str | None = None
    status: str | None = None
    created: str | None = None
    author: str | None = None
    depends_on: StrList | None = None
    binds_to: Any = None
    changelog: Any = None


class Equation(_Open):
    formula: str
    domain: str | None = None
    codomain: str | None = None
    invariants: list[Any] | None = None
    where: Any = None
    note: Any = None


class ProofObligation(_Open):
    type: str
    property: str
    formal: str | None = None
    tolerance: float | str | None = None
    applies_to: str | list[Any] | None = None
    id: str | None = None


class AlgorithmEvidence(_NoNulls):
    """Where the algorithm lives; closed so that a misspelt key is an error, not a no-op."""

    model_config = ConfigDict(extra="forbid", strict=True)

    file_paths: StrList | None = None
    function_names: StrList | None = None
    invariants_enforced: StrList | None = None
    notes: str | None = None


Device = Literal["cpu", "cuda"]
Weights = Literal["synthetic", "real"]
Dtype = Literal["float64", "float32", "float16", "bfloat16"]
Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
NonEmpty = Annotated[str, StringConstraints(min_length=1)]


class LiveRequirements(_NoNulls):
    """Facts a passing run must show to count as live: only the ones pv measures
    (``pv.contract.requirements``), each one value or a non-empty list ("any of them")."""

    model_config = ConfigDict(extra="forbid", strict=True)

    device: Device | Annotated[list[Device], Field(min_length=1)] | None = None
    dtype: Dtype | Annotated[list[Dtype], Field(min_length=1)] | None = None
    weights: Weights | Annotated[list[Weights], Field(min_length=1)] | None = None
    model_sha256: Sha256 | Annotated[list[Sha256], Field(min_length=1)] | None = None
    model_fingerprint: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1)] | None = None
    architecture: NonEmpty | Annotated[list[NonEmpty], Field(min_length=1)] | None = None


class Discharge(_NoNulls):
    """What ``pv discharge`` requires beyond FUNCTIONAL: a live pass per matrix target, artifacts."""

    model_config = ConfigDict(extra="forbid", strict=True)

    matrix: Annotated[list[LiveRequirements], Field(min_length=1)] | None = None
    artifacts: StrList | None = None


class FalsificationTest(_Open):
    id: str
    rule: str
    prediction: str
    if_fails: str
    test: str | Annotated[StrList, Field(min_length=1)] | None = None
    status: str | None = None
    algorithm_evidence: AlgorithmEvidence | StrList | None = None
    live_requirements: LiveRequirements | None = None
    discharge: Discharge | None = None
    binds_to: str | StrList | None = None


class ClaimChange(_NoNulls):
    """An acknowledgement of a weaker claim (``pv acknowledge``): who, why, which claim."""

    model_config = ConfigDict(extra="forbid", strict=True)

    by: Annotated[str, StringConstraints(pattern=r"\S")]
    reason: Annotated[str, StringConstraints(pattern=r"\S")]
    claim: Sha256
    date: str | None = None
    changes: StrList | None = None


class Contract(_Open):
    metadata: Metadata
    equations: dict[Any, Equation] | None = None
    proof_obligations: list[ProofObligation] | None = None
    falsification_tests: list[FalsificationTest] | None = None
    kani_harnesses: Any = None
    qa_gate: Any = None
    verification_summary: Any = None
    enforcement: Any = None
    claim_changes: list[ClaimChange] | None = None


#: Schema ``$defs`` name -> the model that mirrors it (the agreement test walks this).
MODELS_BY_DEF: dict[str, type[BaseModel]] = {
    "metadata": Metadata,
    "equation": Equation,
    "proof_obligation": ProofObligation,
    "falsification_test": FalsificationTest,
    "algorithm_evidence": AlgorithmEvidence,
    "live_requirements": LiveRequirements,
    "discharge": Discharge,
    "claim_change": ClaimChange,
}


def conforms(data: Any) -> bool:
    """True when ``data`` is a structurally valid contract (fast path before the schema walk)."""
    try:
        Contract.model_validate(data)
    except ValidationError:
        return False
    return True
