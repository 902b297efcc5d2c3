"""selfcond: self-conditioning of language models (Suau et al. 2022; GPT-2 and the Llama family),
a ctypes binding of libselfcond's C API (include/selfcond/selfcond.h; the declarations in
_capi.py are generated from it).

    import selfcond
    with selfcond.Model("demo/models/selfcond-mini-30m.scm") as model:
        experts = model.load_experts("demo/experts/football.json")   # or model.rank(pos, neg)
        session = model.session()
        session.set_forcing([(experts, 50)])                          # top-50 experts, on_p50
        print(session.generate("Once upon a time", temperature=0).text)

Objects: Model (weights; shared), Session (KV cache + forcing; one thread at a time), Experts
(an expert table), Ranking (a ranking in steps). Failed calls raise selfcond.Error (.code, a
selfcond.Status, and the library's message). Closing a Model closes its sessions and rankings;
a Session keeps its Model alive. The library is found through SELFCOND_LIBRARY, then the path
recorded at install time (pkg-config), then ctypes.util.find_library("selfcond").

selfcond.pull("owner/name") downloads a checkpoint from the Hugging Face hub and converts it to
a model file (it runs the `selfcond pull` command: see _pull.py).
"""

from ._core import (Error, ExpertUnit, Experts, GenerateResult, Model, ModelInfo, Ranking,
                    Session, Status, TokenStream, Dataset, build_info, expertise, load_dataset,
                    set_log_callback, version)
from ._lib import LibraryNotFoundError, library_path
from ._pull import PullError, pull

__version__ = "0.11.0"

__all__ = [
    "Error", "Status", "LibraryNotFoundError", "Model", "ModelInfo", "Experts", "ExpertUnit",
    "Session", "GenerateResult", "TokenStream", "Ranking", "expertise", "Dataset", "load_dataset", "version",
    "library_path", "build_info", "pull", "PullError", "set_log_callback",
]
