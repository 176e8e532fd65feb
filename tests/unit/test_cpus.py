"""common.cpus: CPU lists parse and print in the kernel's format."""
from __future__ import annotations

import os

import pytest

from common.cpus import current_cpus, format_cpu_list, parse_cpu_list


@pytest.mark.parametrize("text, cpus", [
    ("", set()), ("  ", set()), ("1", {1}), ("2-3", {2, 3}), ("0,4-6", {0, 4, 5, 6}),
    (" 1 , 3-4 ", {1, 3, 4}), ("3,3", {3}),
])
def test_cpu_lists_parse_like_the_kernel_writes_them(text, cpus):
    assert parse_cpu_list(text) == cpus


@pytest.mark.parametrize("text, err", [
    ("a", "'a' is not a CPU number"), ("1,,2", "'' is not a CPU number"),
    ("3-1", "'3-1' is not a CPU number or an increasing range"), ("-1", "'-1'"),
    ("1-", "'1-'"), ("1.5", "'1.5'"),
])
def test_bad_cpu_lists_name_the_wrong_part(text, err):
    with pytest.raises(ValueError, match=err):
        parse_cpu_list(text)


@pytest.mark.parametrize("cpus, text", [
    (set(), ""), ({0}, "0"), ({0, 1, 2, 5}, "0-2,5"), ({7, 3, 4}, "3-4,7"),
])
def test_cpu_lists_print_in_the_kernel_format(cpus, text):
    assert format_cpu_list(cpus) == text
    assert parse_cpu_list(text) == cpus


def test_current_cpus_are_this_process_affinity():
    assert parse_cpu_list(current_cpus()) == os.sched_getaffinity(0)
