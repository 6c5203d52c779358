"""`ObjectStoreRegistry`: which store serves a URL, and the object path within that store."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import obstore
import pytest
from obstore.store import LocalStore, MemoryStore

import vcube
from vcube.errors import StoreNotFoundError
from vcube.registry import ObjectStoreRegistry, normalize_url

if TYPE_CHECKING:
    from pathlib import Path

    from s3_server import StoreFactory, Uploader


def test_longest_prefix_wins_whatever_the_registration_order() -> None:
    bucket, sub = MemoryStore(), MemoryStore()
    for stores in ({"s3://b": bucket, "s3://b/sub": sub}, {"s3://b/sub": sub, "s3://b": bucket}):
        registry = ObjectStoreRegistry(stores)
        store, path = registry.resolve("s3://b/sub/x/y.nc")
        assert store is sub
        assert path == "x/y.nc"
        store, path = registry.resolve("s3://b/other/y.nc")
        assert store is bucket
        assert path == "other/y.nc"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://b/sub", ("sub", "")),
        ("s3://b/sub/", ("sub", "")),
        ("s3://b/subway/x.nc", ("bucket", "subway/x.nc")),
        ("s3://b/sub.nc", ("bucket", "sub.nc")),
        ("s3://b/x.nc", ("bucket", "x.nc")),
    ],
)
def test_prefixes_match_whole_path_segments(url: str, expected: tuple[str, str]) -> None:
    stores = {"bucket": MemoryStore(), "sub": MemoryStore()}
    registry = ObjectStoreRegistry({"s3://b": stores["bucket"], "s3://b/sub/": stores["sub"]})
    store, path = registry.resolve(url)
    assert store is stores[expected[0]]
    assert path == expected[1]


@pytest.mark.parametrize(
    "url", ["s3://bucket2/x.nc", "s3://bucket-old/x.nc", "gs://bucket/x.nc", "s3://buck/x.nc"]
)
def test_a_bucket_prefix_does_not_match_a_longer_or_other_bucket(url: str) -> None:
    registry = ObjectStoreRegistry({"s3://bucket": MemoryStore()})
    with pytest.raises(StoreNotFoundError, match=re.escape(url)) as info:
        registry.resolve(url)
    assert "s3://bucket" in str(info.value)  # the registered prefixes are listed
    assert isinstance(info.value, ValueError)


def test_unregistered_url_names_the_url_and_how_to_register() -> None:
    with pytest.raises(StoreNotFoundError) as info:
        ObjectStoreRegistry().resolve("s3://nowhere/data/x.nc")
    message = str(info.value)
    assert "s3://nowhere/data/x.nc" in message
    assert "'s3://nowhere'" in message


def test_open_virtual_dataset_of_unregistered_url_raises_store_not_found() -> None:
    with pytest.raises(StoreNotFoundError, match=re.escape("s3://nowhere/x.nc")):
        vcube.open_virtual_dataset("s3://nowhere/x.nc", parser=vcube.HDFParser())


@pytest.mark.parametrize("as_url", [False, True])
def test_local_paths_and_file_urls_need_no_registry(tmp_path: Path, as_url: bool) -> None:
    file = tmp_path / "dir with space" / "data.bin"
    file.parent.mkdir()
    file.write_bytes(b"local bytes")
    store, path = ObjectStoreRegistry().resolve(file.as_uri() if as_url else str(file))
    assert isinstance(store, LocalStore)
    assert "/" + path == str(file)
    assert bytes(obstore.get(store, path).bytes()) == b"local bytes"


def test_relative_and_home_paths_are_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.nc").write_bytes(b"x")
    monkeypatch.chdir(tmp_path / "sub")
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = (tmp_path / "sub" / "x.nc").resolve()
    for spelling in ("x.nc", "./x.nc", "../sub/x.nc", "~/sub/x.nc"):
        assert normalize_url(spelling) == expected.as_uri()
        _, path = ObjectStoreRegistry().resolve(spelling)
        assert "/" + path == str(expected)


def test_urls_with_a_scheme_are_kept_as_they_are() -> None:
    for url in ("s3://b/k.nc", "https://host/a/b.nc", "file:///data/x.nc", "memory:///x"):
        assert normalize_url(url) == url


def test_a_registered_file_prefix_takes_precedence_over_the_local_root(tmp_path: Path) -> None:
    (tmp_path / "a.bin").write_bytes(b"via the registered store")
    rooted = LocalStore(tmp_path)
    registry = ObjectStoreRegistry({tmp_path.as_uri(): rooted})
    store, path = registry.resolve(str(tmp_path / "a.bin"))
    assert store is rooted
    assert path == "a.bin"
    assert bytes(obstore.get(store, path).bytes()) == b"via the registered store"
    store, path = registry.resolve(str(tmp_path.parent / "elsewhere.bin"))
    assert store is not rooted
    assert "/" + path == str(tmp_path.parent / "elsewhere.bin")


def test_s3_urls_resolve_to_objects_on_the_server(
    tmp_path: Path, s3_bucket: str, s3_store: StoreFactory, upload: Uploader
) -> None:
    for key, content in {"top.bin": b"top", "sub/dir/x y.bin": b"in sub"}.items():
        file = tmp_path / "f"
        file.write_bytes(content)
        assert upload(file, s3_bucket, key) == f"s3://{s3_bucket}/{key}"
    bucket_store, sub_store = s3_store(s3_bucket), s3_store(s3_bucket, prefix="sub")
    registry = ObjectStoreRegistry(
        {f"s3://{s3_bucket}": bucket_store, f"s3://{s3_bucket}/sub": sub_store}
    )
    for url, (expected_store, expected_path, content) in {
        f"s3://{s3_bucket}/top.bin": (bucket_store, "top.bin", b"top"),
        f"s3://{s3_bucket}/sub/dir/x y.bin": (sub_store, "dir/x y.bin", b"in sub"),
    }.items():
        store, path = registry.resolve(url)
        assert store is expected_store
        assert path == expected_path
        assert bytes(obstore.get(store, path).bytes()) == content
    with pytest.raises(StoreNotFoundError, match=re.escape(f"s3://{s3_bucket}x/top.bin")):
        registry.resolve(f"s3://{s3_bucket}x/top.bin")
