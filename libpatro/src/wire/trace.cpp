#include "trace.hpp"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <limits>
#include <string_view>

#include "op_table.hpp"
#include "patro/error.hpp"
#include "wire.hpp"

namespace patro::detail {

namespace {

// Appends to out, up to a budget: rendering stops once the budget is spent, so a huge argument
// costs no more than kTraceWidth characters.
class Bounded {
 public:
  explicit Bounded(size_t width) : width_(width) {}
  bool full() const noexcept { return out_.size() > width_; }
  void add(std::string_view s) {
    if (!full()) out_.append(s.substr(0, width_ + 1 - out_.size()));
  }
  void add(char c) {
    if (!full()) out_ += c;
  }
  void add_quoted(std::string_view s) {
    add('"');
    for (unsigned char c : s) {
      if (full()) return;
      switch (c) {
        case '"':
          add("\\\"");
          break;
        case '\\':
          add("\\\\");
          break;
        case '\n':
          add("\\n");
          break;
        case '\r':
          add("\\r");
          break;
        case '\t':
          add("\\t");
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\u%04x", c);
            add(buf);
          } else {
            add(static_cast<char>(c));
          }
      }
    }
    add('"');
  }
  /// The text, cut to the width with "..." at its end if it was longer.
  std::string take() {
    if (out_.size() > width_) {
      out_.resize(width_ - 3);
      out_ += "...";
    }
    return std::move(out_);
  }

 private:
  size_t width_;
  std::string out_;
};

void add_hex(Bounded& out, uint64_t server, uint64_t object) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%016" PRIx64 "%016" PRIx64, server, object);
  out.add(buf);
}

void add_path(Bounded& out, const flatbuffers::Vector<flatbuffers::Offset<wire::PathElem>>* path) {
  if (path == nullptr) return;
  for (const wire::PathElem* e : *path) {
    if (out.full()) return;
    out.add('[');
    if (e == nullptr) {
      out.add('?');
    } else if (e->is_index()) {
      out.add(std::to_string(e->index()));
    } else {
      out.add_quoted(e->key() ? e->key()->string_view() : std::string_view());
    }
    out.add(']');
  }
}

void add_value(Bounded& out, const wire::Value* v);

void add_values(Bounded& out, const flatbuffers::Vector<flatbuffers::Offset<wire::Value>>* vs) {
  out.add('[');
  if (vs != nullptr) {
    bool first = true;
    for (const wire::Value* v : *vs) {
      if (out.full()) return;
      if (!first) out.add(',');
      first = false;
      add_value(out, v);
    }
  }
  out.add(']');
}

void add_value(Bounded& out, const wire::Value* v) {
  if (v == nullptr) return out.add("null");
  switch (v->kind()) {
    case wire::Kind::Null:
      return out.add("null");
    case wire::Kind::Bool:
      return out.add(v->b() ? "true" : "false");
    case wire::Kind::Int:
      return out.add(std::to_string(v->i()));
    case wire::Kind::Double: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", v->d());
      return out.add(buf);
    }
    case wire::Kind::String:
      return out.add_quoted(v->s() ? v->s()->string_view() : std::string_view());
    case wire::Kind::Bytes: {
      static const char* hex = "0123456789abcdef";
      out.add("b\"");
      if (v->bytes())
        for (uint8_t c : *v->bytes()) {
          if (out.full()) return;
          out.add(hex[c >> 4]);
          out.add(hex[c & 15]);
        }
      return out.add('"');
    }
    case wire::Kind::Array:
      return add_values(out, v->items());
    case wire::Kind::Hash: {
      out.add('{');
      const auto* keys = v->keys();
      const auto* items = v->items();
      const uint32_t n = keys && items ? std::min(keys->size(), items->size()) : 0;
      for (uint32_t i = 0; i < n && !out.full(); ++i) {
        if (i > 0) out.add(',');
        out.add_quoted(keys->Get(i) ? keys->Get(i)->string_view() : std::string_view());
        out.add(':');
        add_value(out, items->Get(i));
      }
      return out.add('}');
    }
    case wire::Kind::Ref: {
      const wire::Ref* r = v->ref();
      if (r == nullptr) return out.add("REF(?)");
      out.add(r->type_name() && r->type_name()->size() > 0 ? r->type_name()->string_view()
                                                           : std::string_view("REF"));
      out.add('(');
      add_hex(out, r->server(), r->object());
      out.add(')');
      return add_path(out, r->path());
    }
    case wire::Kind::Scalar:
      out.add('\\');
      return add_value(out, v->items() && v->items()->size() > 0 ? v->items()->Get(0) : nullptr);
  }
  out.add("?");
}

}  // namespace

std::string trace_target(const wire::Request& r) {
  std::string out = op_info(r.op()).name;
  if (r.name() != nullptr && r.name()->size() > 0) {
    Bounded name(kTraceWidth);
    name.add(r.name()->string_view());
    out += ' ' + name.take();
  }
  Bounded id(40);
  add_hex(id, r.server(), r.object());
  out += " obj=" + id.take() + " path=";
  if (r.path() == nullptr || r.path()->size() == 0) return out + '-';
  Bounded path(kTraceWidth);
  add_path(path, r.path());
  return out + path.take();
}

std::string trace_args(const wire::Request& r) {
  Bounded out(kTraceWidth);
  add_values(out, r.args());
  return "args=" + out.take();
}

std::string trace_duration(std::chrono::nanoseconds took) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.3fms", static_cast<double>(took.count()) / 1e6);
  return buf;
}

std::string trace_id(uint64_t id) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, id);
  return buf;
}

std::string trace_outcome(const wire::Reply* reply, std::optional<std::chrono::nanoseconds> took,
                          bool batch) {
  const std::string time = took ? ' ' + trace_duration(*took) : std::string();
  if (reply == nullptr) return "bad_message" + time;
  std::string line;
  if (reply->status() == wire::Status::Ok) {
    line = "ok" + time;
    const auto* results = reply->results();
    if (batch) {
      // [calls run, calls failed, the first failure's text]
      const int64_t failed =
          results && results->size() >= 2 && results->Get(1) ? results->Get(1)->i() : 0;
      line += " failed=" + std::to_string(failed);
      if (failed > 0 && results->size() >= 3 && results->Get(2) && results->Get(2)->s()) {
        Bounded first(kTraceWidth);
        first.add_quoted(results->Get(2)->s()->string_view());
        line += " first=" + first.take();
      }
      return line;
    }
    Bounded out(kTraceWidth);
    add_values(out, results);
    return line + " result=" + out.take();
  }
  line = errc_name(static_cast<Errc>(reply->error_code()));
  std::string_view error =
      reply->error_text() ? reply->error_text()->string_view() : std::string_view();
  // The server's text starts with the code's name, which the line has already said.
  if (error.size() > line.size() + 1 && error.substr(0, line.size()) == line &&
      error.substr(line.size(), 2) == ": ")
    error.remove_prefix(line.size() + 2);
  line += time;
  Bounded text(kTraceWidth);
  text.add_quoted(error);
  return line + " error=" + text.take();
}

std::string trace_failure(std::string_view text, std::chrono::nanoseconds took) {
  std::string code = "error";
  if (const size_t colon = text.find(": ");
      colon != std::string_view::npos && colon > 0 &&
      text.substr(0, colon).find_first_not_of("abcdefghijklmnopqrstuvwxyz_") ==
          std::string_view::npos) {
    code = std::string(text.substr(0, colon));
    text.remove_prefix(colon + 2);
  }
  Bounded out(kTraceWidth);
  out.add_quoted(text);
  return code + ' ' + trace_duration(took) + " error=" + out.take();
}

std::string trace_outcome(const zmq::message_t& body, const Limits& limits,
                          std::optional<std::chrono::nanoseconds> took, bool batch) {
  AlignedScratch scratch;
  return trace_outcome(verified_reply(body, limits, scratch), took, batch);
}

}  // namespace patro::detail
