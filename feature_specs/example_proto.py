"""The ``tf.train.Example`` message classes, built from their schema with protobuf alone.

The sampler of ``mmoe spec infer``/``check`` reads TFRecord files of Examples; importing
TensorFlow's generated classes (``tensorflow.core.example.example_pb2``) would load all of
TensorFlow (seconds) for a few messages. The classes here live in a private descriptor pool, so
they never clash with TensorFlow's when both are loaded, and parse the same bytes.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_LABEL_OPTIONAL = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_LABEL_REPEATED = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED
_TYPES = {
    "bytes": descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
    "string": descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
    "float": descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT,
    "int64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "message": descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
}


def _message(file: descriptor_pb2.FileDescriptorProto, name: str, fields, container=None):
    """Adds message ``name`` with ``fields`` ((name, number, type, label, type_name)) to ``file``."""
    message = file.message_type.add() if container is None else container.nested_type.add()
    message.name = name
    for field_name, number, kind, label, type_name in fields:
        item = message.field.add(name=field_name, number=number, type=_TYPES[kind], label=label)
        if type_name:
            item.type_name = type_name
        if kind in ("float", "int64") and label == _LABEL_REPEATED:
            item.options.packed = True
    return message


def _example_file() -> descriptor_pb2.FileDescriptorProto:
    """tensorflow/core/example/{feature,example}.proto, as one file of the private pool."""
    file = descriptor_pb2.FileDescriptorProto(name="feature_specs/example.proto", package="tensorflow",
                                              syntax="proto3")
    _message(file, "BytesList", [("value", 1, "bytes", _LABEL_REPEATED, None)])
    _message(file, "FloatList", [("value", 1, "float", _LABEL_REPEATED, None)])
    _message(file, "Int64List", [("value", 1, "int64", _LABEL_REPEATED, None)])
    feature = _message(file, "Feature", [
        ("bytes_list", 1, "message", _LABEL_OPTIONAL, ".tensorflow.BytesList"),
        ("float_list", 2, "message", _LABEL_OPTIONAL, ".tensorflow.FloatList"),
        ("int64_list", 3, "message", _LABEL_OPTIONAL, ".tensorflow.Int64List"),
    ])
    feature.oneof_decl.add(name="kind")
    for item in feature.field:
        item.oneof_index = 0
    features = _message(file, "Features", [
        ("feature", 1, "message", _LABEL_REPEATED, ".tensorflow.Features.FeatureEntry")])
    entry = _message(file, "FeatureEntry", [
        ("key", 1, "string", _LABEL_OPTIONAL, None),
        ("value", 2, "message", _LABEL_OPTIONAL, ".tensorflow.Feature"),
    ], container=features)
    entry.options.map_entry = True
    _message(file, "Example", [("features", 1, "message", _LABEL_OPTIONAL, ".tensorflow.Features")])
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_example_file())
Example = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("tensorflow.Example"))
