"""Every generate mode on a tiny trained model, through Prefect and the MLflow registry."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
from nifti_factory import good
from scipy.spatial.transform import Rotation

from data_contracts.generation import GenerationRequest, Provenance, RunManifest
from flows.generate import run_generate
from vae3d import files, nifti
from vae3d.sample_data import insert_lesions, phantom


def _check_outputs(manifest: RunManifest, n: int):
    assert len(manifest.outputs) == n
    for rec in manifest.outputs:
        assert files.sha256_file(rec.path) == rec.sha256
        prov = Provenance.model_validate_json(Path(rec.sidecar).read_text())
        assert prov.output_sha256 == rec.sha256
        assert prov.model.name == "vae3d" and prov.model.version == "1" and prov.model.alias == "champion"
        assert prov.model.run_id and len(prov.model.weights_sha256) == 64


def test_synthetic_counts_affine_sidecars_determinism_and_rerun(trained, tmp_path):
    settings, _ = trained
    req = GenerationRequest(mode="synthetic", n=5, seed=3, batch_size=2)
    first = run_generate(req, settings, str(tmp_path / "a"))
    _check_outputs(first, 5)
    img = nib.load(first.outputs[0].path)
    assert img.shape == (24, 24, 24)
    # stored as scaled int16 by default; get_fdata gives the [0, 1] image back
    assert img.get_data_dtype() == np.int16 and img.get_fdata().min() >= 0 and img.get_fdata().max() <= 1
    np.testing.assert_allclose(np.sqrt((img.affine[:3, :3] ** 2).sum(0)), [6, 6, 6])
    assert not np.allclose(img.affine, np.eye(4))
    # same seed, another folder, written by two writer threads: byte-identical volumes
    two_writers = settings.model_copy(update={"generate": settings.generate.model_copy(update={"writers": 2})})
    again = run_generate(req, two_writers, str(tmp_path / "b"))
    assert [r.sha256 for r in again.outputs] == [r.sha256 for r in first.outputs]
    # a different seed differs
    other = run_generate(req.model_copy(update={"seed": 4}), settings, str(tmp_path / "c"))
    assert other.outputs[0].sha256 != first.outputs[0].sha256
    # a re-run skips complete outputs; a deleted one is regenerated identically, no duplicates
    victim = first.outputs[3]
    (tmp_path / "a" / (victim.path.split("/")[-1])).unlink()
    rerun = run_generate(req, settings, str(tmp_path / "a"))
    assert rerun.skipped_existing == 4
    assert [r.sha256 for r in rerun.outputs] == [r.sha256 for r in first.outputs]
    assert len(list((tmp_path / "a").glob("*.nii.gz"))) == 5
    on_disk = RunManifest.read(tmp_path / "a" / "run_manifest.json")
    assert [r.sha256 for r in on_disk.outputs] == [r.sha256 for r in first.outputs]
    # float32, stored gzip: the same image to within one int16 step, in its own folder
    raw = run_generate(req.model_copy(update={"dtype": "float32", "compression": 0}), settings)
    assert raw.request_key != first.request_key
    as_float = nib.load(raw.outputs[0].path)
    assert as_float.get_data_dtype() == np.float32
    np.testing.assert_allclose(as_float.get_fdata(), img.get_fdata(), atol=nifti.INT16_STEP)


def _lps_oblique(path, seed=0, lesion=False):
    image, affine, _ = phantom((32, 32, 32), spacing=4.0, seed=seed, noise=0.01)
    mask = np.zeros(image.shape, np.uint8)
    if lesion:
        rng = np.random.default_rng(1)
        wm = image > 0.85
        image, mask, _ = insert_lesions(image, wm, rng, n_range=(1, 1), radius_range=(3.5, 4.0),
                                        contrast_range=(0.6, 0.6), polarity="hypo")
        # hypo-intense: a bright lesion this large (2% of a 32^3 head) would move the 99.5th
        # percentile that preprocessing scales by, and dim everything else instead
    n = image.shape
    to_lps = np.eye(4)  # voxel axes 0 and 1 reversed: RAS storage becomes LPS
    to_lps[0, 0], to_lps[1, 1], to_lps[0, 3], to_lps[1, 3] = -1, -1, n[0] - 1, n[1] - 1
    rot = np.eye(4)
    rot[:3, :3] = Rotation.from_euler("zx", [10, 7], degrees=True).as_matrix()
    aff = rot @ affine @ to_lps
    img = nib.Nifti1Image(np.ascontiguousarray(image[::-1, ::-1, :]), aff)
    assert "".join(nib.aff2axcodes(aff)) == "LPS"
    nib.save(img, str(path))
    return path, mask[::-1, ::-1, :].copy()


@pytest.mark.parametrize("mode", ["denoise", "anomaly"])
def test_denoise_and_anomaly_share_the_inputs_grid(trained, tmp_path, mode):
    settings, _ = trained
    path, _ = _lps_oblique(tmp_path / "lps_oblique.nii.gz")
    manifest = run_generate(GenerationRequest(mode=mode, inputs=(str(path),)), settings, str(tmp_path / "out"))
    _check_outputs(manifest, 1)
    src, out = nib.load(path), nib.load(manifest.outputs[0].path)
    assert out.shape == src.shape
    assert out.get_data_dtype() == (np.float32 if mode == "anomaly" else np.int16)
    np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
    prov = Provenance.model_validate_json(Path(manifest.outputs[0].sidecar).read_text())
    assert prov.input_sha256 == files.sha256_file(path)
    if mode == "anomaly":
        assert "score" in prov.parameters and "score_threshold" in prov.parameters


def test_anomaly_map_is_higher_inside_a_lesion_and_a_lesion_raises_the_score(trained, tmp_path):
    settings, _ = trained
    path, mask = _lps_oblique(tmp_path / "lesion.nii.gz", seed=2, lesion=True)
    same, _ = _lps_oblique(tmp_path / "healthy.nii.gz", seed=2)  # the same scan without the lesion
    manifest = run_generate(GenerationRequest(mode="anomaly", inputs=(str(path), str(same))), settings,
                            str(tmp_path / "o"))
    lesioned, healthy = sorted(manifest.outputs, key=lambda r: "healthy" in r.path)
    amap = nib.load(lesioned.path).get_fdata()
    head = nib.load(path).get_fdata() > 0.3
    inside = amap[mask > 0].mean()
    outside = amap[head & (mask == 0)].mean()
    assert inside > 1.5 * outside, (inside, outside)
    scores = [Provenance.model_validate_json(Path(r.sidecar).read_text()).parameters for r in (lesioned, healthy)]
    assert scores[0]["score"] > scores[1]["score"], scores
    assert {"flagged", "score_threshold", "false_positive_rate"} <= set(scores[0])
    assert scores[0]["fpr_confidence"] == settings.train.anomaly.fpr_confidence == 0.8  # as registration was told


def test_augment_variants_and_embed(trained, tmp_path):
    settings, src = trained
    inputs = tuple(str(p) for p in sorted(src.glob("*.nii.gz"))[:3])
    aug = run_generate(GenerationRequest(mode="augment", inputs=inputs, variants=2, seed=1, artifacts=True),
                       settings, str(tmp_path / "aug"))
    _check_outputs(aug, 6)
    a, b = (nib.load(r.path).get_fdata() for r in aug.outputs[:2])
    assert a.shape == (24, 24, 24) and not np.array_equal(a, b)
    emb = run_generate(GenerationRequest(mode="embed", inputs=inputs), settings, str(tmp_path / "emb"),
                       labels={p: "grp" for p in inputs})
    assert sorted(Path(r.path).name for r in emb.outputs) == ["embeddings.parquet", "embeddings_pca.png"]
    table = pq.read_table(tmp_path / "emb" / "embeddings.parquet")
    assert table.num_rows == 3 and set(table.column_names) == {"id", "path", "sha256", "label", "latent"}
    assert len(table.column("latent")[0].as_py()) == 32  # the fixture model has a flat latent
    assert table.schema.field("latent").type.list_size == 32  # a fixed-size list: a 2-D array to readers
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["vae3d.latent_size"] == "32" and json.loads(meta["vae3d.latent_shape"]) == [32]
    assert json.loads(meta["vae3d.model"])["version"] == "1"
    assert table.column("label").to_pylist() == ["grp"] * 3
    assert (tmp_path / "emb" / "embeddings_pca.png").stat().st_size > 1000
    assert json.loads((tmp_path / "emb" / "embeddings.json").read_text())["mode"] == "embed"


def test_super_resolve_output_grid_and_intensity_scale(trained, tmp_path):
    """A thick-slice oblique scan at 8x8x12 mm: x2 gives the model's 6 mm voxels with the
    input's field of view and orientation, on the input's own intensity scale."""
    from vae3d.preprocessing.inputs import super_resolution_grid

    settings, _ = trained
    # 12 mm slices break ingest's default contract (spacing <= 10 mm), which generate's inputs follow too
    settings = settings.model_copy(update={"ingest": settings.ingest.model_copy(update={"max_spacing_mm": 15.0})})
    image, _, _ = phantom((24, 24, 16), spacing=8.0, seed=5, noise=0.01)
    rot = np.eye(4)
    rot[:3, :3] = Rotation.from_euler("zx", [15, -6], degrees=True).as_matrix()
    aff = rot @ np.diag([8.0, 8.0, 12.0, 1.0])
    path = tmp_path / "thick.nii.gz"
    nifti.save_volume(path, (image * 700).astype(np.float32), aff)
    req = GenerationRequest(mode="super-resolve", inputs=(str(path),), factor=2)
    manifest = run_generate(req, settings, str(tmp_path / "sr"))
    _check_outputs(manifest, 1)
    out = nib.load(manifest.outputs[0].path)
    want_aff, want_shape = super_resolution_grid(aff, (24, 24, 16), (6.0, 6.0, 6.0), factor=2)
    assert out.shape == want_shape == (32, 32, 32)
    np.testing.assert_allclose(out.affine, want_aff, atol=1e-4)
    assert "".join(nib.aff2axcodes(out.affine)) == "".join(nib.aff2axcodes(aff))
    assert Path(manifest.outputs[0].path).name == "thick_desc-superres.nii.gz"
    prov = Provenance.model_validate_json(Path(manifest.outputs[0].sidecar).read_text())
    lo, hi = prov.parameters["intensity_range"]
    assert hi > 100 and out.get_fdata().max() > 100  # the input's units
    unit = run_generate(req.model_copy(update={"intensity": "unit"}), settings, str(tmp_path / "unit"))
    assert nib.load(unit.outputs[0].path).get_fdata().max() <= 1.0 + 1e-6
    # back-projected by default: averaged onto the input's voxels, the output gives the input back
    assert prov.parameters["back_projected"] is True
    alone = run_generate(req.model_copy(update={"fusion": False}), settings, str(tmp_path / "alone"))
    assert "back_projected" not in json.loads(Path(alone.outputs[0].sidecar).read_text())["parameters"]
    measured = torch.from_numpy(image * 700).float().clip(lo, hi)[None, None]
    gap = lambda p: float((F.adaptive_avg_pool3d(torch.from_numpy(nib.load(p).get_fdata()).float()[None, None],
                                                 (24, 24, 16)) - measured).abs().mean())
    assert gap(manifest.outputs[0].path) < 0.5 * gap(alone.outputs[0].path)


def test_outputs_are_reused_only_for_the_same_request(trained, tmp_path):
    """An output on disk counts as done only if its sidecar records this request: the same
    input, pinned model version and parameters. Same-named inputs get distinct outputs."""
    from mlflow.tracking import MlflowClient

    settings, _src = trained
    # two sites, one file name, different scans: two outputs, neither lost
    for site, seed in (("siteA", 1), ("siteB", 2)):
        good(tmp_path / site / "sub-001_T1w.nii.gz", seed=seed, shape=(32, 32, 32))
    inputs = tuple(str(tmp_path / s / "sub-001_T1w.nii.gz") for s in ("siteA", "siteB"))
    req = GenerationRequest(mode="denoise", inputs=inputs)
    both = run_generate(req, settings, str(tmp_path / "den"))
    assert len(both.outputs) == 2 and len({r.input_sha256 for r in both.outputs}) == 2
    assert {Path(r.path).name for r in both.outputs} == {
        f"sub-001_src-{hashlib.sha256(str(Path(p).resolve()).encode()).hexdigest()[:8]}_desc-denoised_T1w.nii.gz"
        for p in inputs}
    assert set(both.disambiguated) == set(inputs)

    # changed parameters into the same folder: made again, and the sidecars say so
    syn = GenerationRequest(mode="synthetic", n=2, seed=0)
    run_generate(syn, settings, str(tmp_path / "syn"))
    hot = run_generate(syn.model_copy(update={"temperature": 3.0, "dtype": "float32"}), settings, str(tmp_path / "syn"))
    assert hot.skipped_existing == 0 and hot.regenerated == 2
    for r in hot.outputs:
        prov = Provenance.model_validate_json(Path(r.sidecar).read_text())
        assert prov.parameters["temperature"] == 3.0 and nib.load(r.path).get_data_dtype() == np.float32
    assert run_generate(syn.model_copy(update={"temperature": 3.0, "dtype": "float32"}), settings,
                        str(tmp_path / "syn")).skipped_existing == 2

    # the champion moves to a new version: the same command makes the outputs again
    uri = f"sqlite:///{settings.workspace / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(uri, uri)
    v1 = client.get_model_version_by_alias("vae3d", "champion")
    v2 = client.create_model_version("vae3d", v1.source, run_id=v1.run_id, tags=v1.tags)
    try:
        client.set_registered_model_alias("vae3d", "champion", v2.version)
        moved = run_generate(syn, settings, str(tmp_path / "syn"))
        assert moved.model.version == str(v2.version) and moved.regenerated == 2
        assert all(Provenance.model_validate_json(Path(r.sidecar).read_text()).model.version == str(v2.version)
                   for r in moved.outputs)
        assert moved.request_key != run_generate(syn.model_copy(update={"model_uri": "models:/vae3d/1"}), settings,
                                                 str(tmp_path / "v1")).request_key
    finally:
        client.set_registered_model_alias("vae3d", "champion", v1.version)
        client.delete_model_version("vae3d", v2.version)


def test_a_folder_in_the_way_of_an_output_is_a_clear_error(trained, tmp_path):
    from data_contracts import PipelineError

    settings, _ = trained
    out = tmp_path / "out"
    (out / "sub-seed0synth000001_desc-synthetic_T1w.json").mkdir(parents=True)  # the second output's sidecar
    with pytest.raises(PipelineError, match=r"sub-seed0synth000001_desc-synthetic_T1w\.json is a folder") as info:
        run_generate(GenerationRequest(mode="synthetic", n=3, seed=0, batch_size=1), settings, str(out))
    assert "move or rename that folder" in info.value.fix
    assert (out / "sub-seed0synth000000_desc-synthetic_T1w.json").is_file(), "the outputs before it are kept"


def test_outputs_are_bids_derivatives_named_with_desc_entities(trained, tmp_path):
    """Each mode's file names carry a desc- entity before the input's suffix, every output folder
    has a derivative dataset_description.json, and sidecars have the BIDS keys beside provenance."""
    settings, _ = trained
    anat = tmp_path / "bids" / "sub-07" / "ses-2" / "anat"
    good(anat / "sub-07_ses-2_T1w.nii.gz", seed=4, shape=(32, 32, 32))
    inp = (str(anat / "sub-07_ses-2_T1w.nii.gz"),)
    want = {
        "denoise": ["sub-07_ses-2_desc-denoised_T1w.nii.gz"],
        "super-resolve": ["sub-07_ses-2_desc-superres_T1w.nii.gz"],
        "anomaly": ["sub-07_ses-2_desc-anomaly_T1w.nii.gz"],
        "augment": ["sub-07_ses-2_desc-aug000_T1w.nii.gz", "sub-07_ses-2_desc-aug001_T1w.nii.gz"],
        "synthetic": [f"sub-seed5synth00000{i}_desc-synthetic_T1w.nii.gz" for i in (0, 1)],
    }
    for mode, names in want.items():
        req = (GenerationRequest(mode=mode, n=2, seed=5) if mode == "synthetic"
               else GenerationRequest(mode=mode, inputs=inp, variants=2))
        manifest = run_generate(req, settings, str(tmp_path / mode))
        assert sorted(Path(r.path).name for r in manifest.outputs) == names, mode
        desc = json.loads((tmp_path / mode / "dataset_description.json").read_text())
        assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"], desc
        assert desc["GeneratedBy"][0]["Name"] == "vae3d" and mode in desc["GeneratedBy"][0]["Description"]
        side = json.loads(Path(manifest.outputs[0].sidecar).read_text())
        assert side["Description"] and side["mode"] == mode
        if mode != "synthetic":
            assert side["Sources"] == [Path(inp[0]).resolve().as_uri()]
            assert desc["SourceDatasets"] == [{"URL": anat.resolve().as_uri()}]
        if mode in ("denoise", "super-resolve", "anomaly"):
            assert side["SpatialReference"] == side["Sources"][0]
    # each generate run is named after its mode and request in the Prefect UI
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    with get_client(sync_client=True) as prefect:
        names = {r.name for r in prefect.read_flow_runs(flow_run_filter=FlowRunFilter(name={"like_": "generate-"}))}
    assert {"generate-denoise-1-inputs-seed0", "generate-augment-1-inputs-seed0", "generate-synthetic-2-seed5"} <= names


@pytest.mark.parametrize("mode", ["denoise", "anomaly", "synthetic"])
def test_the_sidecar_dtype_is_the_files(trained, tmp_path, mode):
    """An anomaly map is float32 whatever the request's dtype (int16 by default): its sidecar says
    float32; an image stored as int16 says int16."""
    settings, src = trained
    inputs = () if mode == "synthetic" else (str(sorted(src.glob("*.nii.gz"))[0]),)
    manifest = run_generate(GenerationRequest(mode=mode, inputs=inputs, n=1), settings, str(tmp_path / "o"))
    stored = nib.load(manifest.outputs[0].path).get_data_dtype()
    recorded = Provenance.model_validate_json(Path(manifest.outputs[0].sidecar).read_text()).parameters["dtype"]
    assert np.dtype(recorded) == stored == (np.float32 if mode == "anomaly" else np.int16)
    # and a re-run reuses it: the reuse check expects what the sidecar records
    again = run_generate(GenerationRequest(mode=mode, inputs=inputs, n=1), settings, str(tmp_path / "o"))
    assert again.skipped_existing == 1


def test_an_mni_space_input_keeps_its_header_codes(trained, tmp_path):
    """sform code 4 (MNI) and qform code 1 of the input survive denoising, as nilearn's new_img_like keeps them."""
    settings, src = trained
    img = nib.load(sorted(src.glob("*.nii.gz"))[0])
    mni = nib.Nifti1Image(np.asarray(img.dataobj), img.affine)
    mni.set_sform(img.affine, code=4)
    mni.set_qform(img.affine, code=1)
    path = tmp_path / "sub-01_space-MNI152NLin2009aSym_T1w.nii.gz"
    nib.save(mni, str(path))
    manifest = run_generate(GenerationRequest(mode="denoise", inputs=(str(path),)), settings, str(tmp_path / "o"))
    out = nib.load(manifest.outputs[0].path)
    assert int(out.header["sform_code"]) == 4 and int(out.header["qform_code"]) == 1
    assert Path(manifest.outputs[0].path).name == "sub-01_space-MNI152NLin2009aSym_desc-denoised_T1w.nii.gz"


def test_synthetic_samples_the_registered_prior_as_a_plain_pyfunc_load_does(trained, tmp_path):
    """The prior fitted at registration round-trips through the registry: a plain
    mlflow.pyfunc.load_model samples it (seeded) and gives what `generate synthetic` writes."""
    import mlflow

    settings, _ = trained
    uri = f"sqlite:///{settings.workspace / 'mlflow' / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model("models:/vae3d@champion")
    prior = model.unwrap_python_model().prior
    assert prior.kind == "lowrank" and model.metadata.metadata["output_shapes"]["synthetic"] == [-1, 1, 24, 24, 24]
    blank = np.zeros((3, 1, 24, 24, 24), np.float32)
    got = model.predict(blank, params={"mode": "synthetic", "seed": 3})
    assert np.array_equal(got, model.predict(blank, params={"mode": "synthetic", "seed": 3}))
    assert not np.array_equal(got, model.predict(blank, params={"mode": "synthetic", "seed": 4}))
    written = run_generate(GenerationRequest(mode="synthetic", n=3, seed=3, dtype="float32"), settings,
                           str(tmp_path / "syn"))
    vols = np.stack([nib.load(r.path).get_fdata() for r in sorted(written.outputs, key=lambda r: r.path)])
    np.testing.assert_allclose(got[:, 0], vols, atol=1e-5)


def test_augment_in_input_space_shares_the_inputs_shape_and_affine(trained, tmp_path):
    """--space input: variants resampled onto the input's own grid and scale (its masks still line
    up), moved along the registered prior's directions; template space stays the model's grid."""
    settings, _ = trained
    path, _ = _lps_oblique(tmp_path / "sub-01_T1w.nii.gz")
    req = GenerationRequest(mode="augment", inputs=(str(path),), variants=2, seed=2, space="input")
    manifest = run_generate(req, settings, str(tmp_path / "in"))
    _check_outputs(manifest, 2)
    src = nib.load(path)
    outs = [nib.load(r.path) for r in manifest.outputs]
    for out in outs:
        assert out.shape == src.shape
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
    assert not np.array_equal(outs[0].get_fdata(), outs[1].get_fdata())
    side = json.loads(Path(manifest.outputs[0].sidecar).read_text())
    lo, hi = side["parameters"]["intensity_range"]  # on the input's intensity scale: [0, 1] mapped back to it
    assert outs[0].get_fdata().max() == pytest.approx(hi, rel=0.35) and outs[0].get_fdata().min() >= lo - 1e-3
    assert side["SpatialReference"] == Path(path).resolve().as_uri() and side["parameters"]["space"] == "input"
    template = run_generate(req.model_copy(update={"space": "template"}), settings, str(tmp_path / "tpl"))
    assert nib.load(template.outputs[0].path).shape == (24, 24, 24)
