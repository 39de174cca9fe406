//! Hand-written [`prost::Message`] impls for the messages that hold maps,
//! writing every map entry with both key and value present, as Go's
//! protobuf runtime does (prost's generic map encoder drops zero values).

use std::collections::BTreeMap;

use prost::bytes::{Buf, BufMut};
use prost::encoding::{DecodeContext, WireType};
use prost::{DecodeError, Message};

use super::{BuildOp, Definition, OpMetadata, Source, SourceOp};

/// Encoders for one map type: length and write of an entry's key and value,
/// always both present (Go layout).
mod gomap {
    use super::{BTreeMap, BufMut, Message, WireType};
    use prost::encoding::{encode_key, encode_varint, encoded_len_varint, key_len};

    /// Writes a map field. `kl`/`vl` give the encoded length of the key field
    /// (tag 1) and value field (tag 2); `ke`/`ve` write them.
    pub(super) fn encode<K, V, B: BufMut>(
        tag: u32,
        map: &BTreeMap<K, V>,
        buf: &mut B,
        kl: impl Fn(&K) -> usize,
        vl: impl Fn(&V) -> usize,
        ke: impl Fn(&K, &mut B),
        ve: impl Fn(&V, &mut B),
    ) {
        for (k, v) in map {
            encode_key(tag, WireType::LengthDelimited, buf);
            encode_varint((kl(k) + vl(v)) as u64, buf);
            ke(k, buf);
            ve(v, buf);
        }
    }

    /// Encoded length of a map field.
    pub(super) fn encoded_len<K, V>(
        tag: u32,
        map: &BTreeMap<K, V>,
        kl: impl Fn(&K) -> usize,
        vl: impl Fn(&V) -> usize,
    ) -> usize {
        map.iter()
            .map(|(k, v)| {
                let len = kl(k) + vl(v);
                key_len(tag) + encoded_len_varint(len as u64) + len
            })
            .sum()
    }

    pub(super) fn str_len(s: &String) -> usize {
        prost::encoding::string::encoded_len(1, s)
    }
    pub(super) fn str_len2(s: &String) -> usize {
        prost::encoding::string::encoded_len(2, s)
    }
    pub(super) fn str_key<B: BufMut>(s: &String, buf: &mut B) {
        prost::encoding::string::encode(1, s, buf);
    }
    pub(super) fn str_val<B: BufMut>(s: &String, buf: &mut B) {
        prost::encoding::string::encode(2, s, buf);
    }
    pub(super) fn msg_len2<M: Message>(m: &M) -> usize {
        prost::encoding::message::encoded_len(2, m)
    }
    pub(super) fn msg_val<M: Message, B: BufMut>(m: &M, buf: &mut B) {
        prost::encoding::message::encode(2, m, buf);
    }
    pub(super) fn bool_len2(v: &bool) -> usize {
        prost::encoding::bool::encoded_len(2, v)
    }
    pub(super) fn bool_val<B: BufMut>(v: &bool, buf: &mut B) {
        prost::encoding::bool::encode(2, v, buf);
    }
}

fn merge_string_map(
    map: &mut BTreeMap<String, String>,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    prost::encoding::btree_map::merge(
        |wt, k: &mut String, b, c| prost::encoding::string::merge(wt, k, b, c),
        |wt, v: &mut String, b, c| prost::encoding::string::merge(wt, v, b, c),
        map,
        buf,
        ctx,
    )
}

fn merge_message_map<M: Message + Default>(
    map: &mut BTreeMap<String, M>,
    buf: &mut impl Buf,
    ctx: DecodeContext,
) -> Result<(), DecodeError> {
    prost::encoding::btree_map::merge(
        |wt, k: &mut String, b, c| prost::encoding::string::merge(wt, k, b, c),
        |wt, v: &mut M, b, c| prost::encoding::message::merge(wt, v, b, c),
        map,
        buf,
        ctx,
    )
}

fn encode_string_map(tag: u32, map: &BTreeMap<String, String>, buf: &mut impl BufMut) {
    gomap::encode(
        tag,
        map,
        buf,
        gomap::str_len,
        gomap::str_len2,
        gomap::str_key,
        gomap::str_val,
    );
}

fn string_map_len(tag: u32, map: &BTreeMap<String, String>) -> usize {
    gomap::encoded_len(tag, map, gomap::str_len, gomap::str_len2)
}

fn encode_message_map<M: Message>(tag: u32, map: &BTreeMap<String, M>, buf: &mut impl BufMut) {
    gomap::encode(
        tag,
        map,
        buf,
        gomap::str_len,
        gomap::msg_len2,
        gomap::str_key,
        gomap::msg_val,
    );
}

fn message_map_len<M: Message>(tag: u32, map: &BTreeMap<String, M>) -> usize {
    gomap::encoded_len(tag, map, gomap::str_len, gomap::msg_len2)
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

macro_rules! scalar_field {
    (encode $kind:ident, $tag:expr, $val:expr, $buf:expr) => {
        if !is_default($val) {
            prost::encoding::$kind::encode($tag, $val, $buf);
        }
    };
    (len $kind:ident, $tag:expr, $val:expr) => {
        if !is_default($val) {
            prost::encoding::$kind::encoded_len($tag, $val)
        } else {
            0
        }
    };
}

impl Message for SourceOp {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        scalar_field!(encode string, 1, &self.identifier, buf);
        encode_string_map(2, &self.attrs, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => prost::encoding::string::merge(wire_type, &mut self.identifier, buf, ctx),
            2 => {
                check_len_delimited(wire_type)?;
                merge_string_map(&mut self.attrs, buf, ctx)
            }
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        scalar_field!(len string, 1, &self.identifier) + string_map_len(2, &self.attrs)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for BuildOp {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        scalar_field!(encode int64, 1, &self.builder, buf);
        encode_message_map(2, &self.inputs, buf);
        if let Some(def) = &self.def {
            prost::encoding::message::encode(3, def, buf);
        }
        encode_string_map(4, &self.attrs, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => prost::encoding::int64::merge(wire_type, &mut self.builder, buf, ctx),
            2 => {
                check_len_delimited(wire_type)?;
                merge_message_map(&mut self.inputs, buf, ctx)
            }
            3 => prost::encoding::message::merge(
                wire_type,
                self.def.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            4 => {
                check_len_delimited(wire_type)?;
                merge_string_map(&mut self.attrs, buf, ctx)
            }
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        scalar_field!(len int64, 1, &self.builder)
            + message_map_len(2, &self.inputs)
            + self
                .def
                .as_ref()
                .map_or(0, |d| prost::encoding::message::encoded_len(3, d))
            + string_map_len(4, &self.attrs)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for Definition {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        prost::encoding::bytes::encode_repeated(1, &self.def, buf);
        encode_message_map(2, &self.metadata, buf);
        if let Some(source) = &self.source {
            prost::encoding::message::encode(3, source, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => prost::encoding::bytes::merge_repeated(wire_type, &mut self.def, buf, ctx),
            2 => {
                check_len_delimited(wire_type)?;
                merge_message_map(&mut self.metadata, buf, ctx)
            }
            3 => prost::encoding::message::merge(
                wire_type,
                self.source.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        prost::encoding::bytes::encoded_len_repeated(1, &self.def)
            + message_map_len(2, &self.metadata)
            + self
                .source
                .as_ref()
                .map_or(0, |s| prost::encoding::message::encoded_len(3, s))
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for OpMetadata {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        scalar_field!(encode bool, 1, &self.ignore_cache, buf);
        encode_string_map(2, &self.description, buf);
        if let Some(ec) = &self.export_cache {
            prost::encoding::message::encode(4, ec, buf);
        }
        gomap::encode(
            5,
            &self.caps,
            buf,
            gomap::str_len,
            gomap::bool_len2,
            gomap::str_key,
            gomap::bool_val,
        );
        if let Some(pg) = &self.progress_group {
            prost::encoding::message::encode(6, pg, buf);
        }
        if let Some(lr) = &self.linux_resources {
            prost::encoding::message::encode(7, lr, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => prost::encoding::bool::merge(wire_type, &mut self.ignore_cache, buf, ctx),
            2 => {
                check_len_delimited(wire_type)?;
                merge_string_map(&mut self.description, buf, ctx)
            }
            4 => prost::encoding::message::merge(
                wire_type,
                self.export_cache.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            5 => {
                check_len_delimited(wire_type)?;
                prost::encoding::btree_map::merge(
                    |wt, k: &mut String, b, c| prost::encoding::string::merge(wt, k, b, c),
                    |wt, v: &mut bool, b, c| prost::encoding::bool::merge(wt, v, b, c),
                    &mut self.caps,
                    buf,
                    ctx,
                )
            }
            6 => prost::encoding::message::merge(
                wire_type,
                self.progress_group.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            7 => prost::encoding::message::merge(
                wire_type,
                self.linux_resources.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        scalar_field!(len bool, 1, &self.ignore_cache)
            + string_map_len(2, &self.description)
            + self
                .export_cache
                .as_ref()
                .map_or(0, |m| prost::encoding::message::encoded_len(4, m))
            + gomap::encoded_len(5, &self.caps, gomap::str_len, gomap::bool_len2)
            + self
                .progress_group
                .as_ref()
                .map_or(0, |m| prost::encoding::message::encoded_len(6, m))
            + self
                .linux_resources
                .as_ref()
                .map_or(0, |m| prost::encoding::message::encoded_len(7, m))
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Message for Source {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        encode_message_map(1, &self.locations, buf);
        prost::encoding::message::encode_repeated(2, &self.infos, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => {
                check_len_delimited(wire_type)?;
                merge_message_map(&mut self.locations, buf, ctx)
            }
            2 => prost::encoding::message::merge_repeated(wire_type, &mut self.infos, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        message_map_len(1, &self.locations)
            + prost::encoding::message::encoded_len_repeated(2, &self.infos)
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

fn check_len_delimited(wire_type: WireType) -> Result<(), DecodeError> {
    prost::encoding::check_wire_type(WireType::LengthDelimited, wire_type)
}
