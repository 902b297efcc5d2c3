package org.selfcond;

import java.nio.charset.StandardCharsets;

/** Strings to and from the C API's NUL-free UTF-8. */
final class Utf8 {
  private Utf8() {}

  static byte[] bytes(String s, String what) {
    if (s == null) throw new IllegalArgumentException(what + " is null");
    if (s.indexOf('\0') >= 0) throw new IllegalArgumentException(what + " contains a NUL character");
    return s.getBytes(StandardCharsets.UTF_8);
  }

  static byte[][] all(java.util.List<String> list, String what) {
    if (list == null) throw new IllegalArgumentException(what + "s are null");
    byte[][] out = new byte[list.size()][];
    for (int i = 0; i < out.length; i++) out[i] = bytes(list.get(i), what + " " + i);
    return out;
  }

  static String string(byte[] b) {
    return new String(b, StandardCharsets.UTF_8);
  }

  static String[] strings(byte[][] b) {
    String[] out = new String[b.length];
    for (int i = 0; i < b.length; i++) out[i] = string(b[i]);
    return out;
  }
}
