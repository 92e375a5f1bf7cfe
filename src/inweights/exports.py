"""`inweights export`: a finished run's final models as standalone ``save_pretrained`` folders."""

from __future__ import annotations

from pathlib import Path

from inweights.core.errors import UserError


def export_models(run: Path, out_arg: str | None, recipes: list[str] | None, merge: bool) -> int:
    """`inweights export`: each recipe's final model as a standalone folder; LoRA stages are merged with ``merge``."""
    import shutil

    from inweights.core.io import check_out, read_json_object
    from inweights.models.load import is_adapter_dir, load_model, save_model

    index = run / "models.json"
    if not index.is_file():
        raise UserError(f"{run}: no models.json (is it a finished run directory?)")
    models = read_json_object(index, "run model index")
    recipes = recipes or list(models)
    unknown = [r for r in recipes if r not in models]
    if unknown:
        raise UserError(f"--recipe {', '.join(unknown)}: not in this run (it has: {', '.join(models)})")
    out = check_out(Path(out_arg) if out_arg else run / "export")
    for r in recipes:
        src = run / str(models[r])
        if not isinstance(models[r], str) or not ((src / "config.json").is_file() or is_adapter_dir(src)):
            raise UserError(f"{index}: the model of {r} ({models[r]}) is missing or damaged; the run folder is "
                            f"incomplete")
    adapters = [r for r in recipes if is_adapter_dir(run / models[r])]
    if adapters and not merge:
        raise UserError(f"{', '.join(adapters)}: trained with LoRA (adapters chained over stages); "
                        f"pass --merge to write merged models")
    for r in recipes:
        src, dst = run / models[r], out / r.replace("@", "_")
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        if is_adapter_dir(src):
            model, tok = load_model(src)
            save_model(model, tok, tmp)
        else:
            shutil.copytree(src, tmp)
        shutil.rmtree(dst, ignore_errors=True)
        tmp.replace(dst)
        print(f"{r}: {dst}")
    return 0
