// nibble/detail/type_list.cuh — a compile-time list of types: the one place a set of configurations (the GEMM
// tiles) is written down; everything else iterates over it.
#pragma once

#include <cstddef>
#include <type_traits>

namespace nibble::detail {

template <class... Ts>
struct TypeList {
  static constexpr int kSize = int(sizeof...(Ts));
};

/// Index of T in List (a compile error when T is not in it).
template <class T, class List>
struct IndexOf;
template <class T, class... Rest>
struct IndexOf<T, TypeList<T, Rest...>> : std::integral_constant<int, 0> {};
template <class T, class Head, class... Rest>
struct IndexOf<T, TypeList<Head, Rest...>> : std::integral_constant<int, 1 + IndexOf<T, TypeList<Rest...>>::value> {};

/// Calls f(Ts{}) for every type of the list, in order.
template <class... Ts, class F>
constexpr void for_each_type(TypeList<Ts...>, F&& f) {
  (f(Ts{}), ...);
}

/// Calls f(Ts{}) for the type at `index` of the list and returns its result; `fallback` when none is.
template <class R, class... Ts, class F>
constexpr R visit_type(TypeList<Ts...>, int index, R fallback, F&& f) {
  R result = fallback;
  int i = 0;
  ((i++ == index ? (void)(result = f(Ts{})) : (void)0), ...);
  return result;
}

}  // namespace nibble::detail
