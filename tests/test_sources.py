"""Patients and subtypes from the original file names."""

import pytest

from pneumojax.data import sources

pytestmark = pytest.mark.smoke


@pytest.mark.parametrize('name,label,expected', [
    ('person1000_bacteria_2931.jpeg', 'PNEUMONIA', ('person1000', 'bacteria')),
    ('person1_virus_6.jpeg', 'PNEUMONIA', ('person1', 'virus')),
    ('IM-0011-0001-0002.jpeg', 'NORMAL', ('IM-0011', 'normal')),
    ('NORMAL2-IM-0373-0001.jpeg', 'NORMAL', ('NORMAL2-IM-0373', 'normal')),
])
def test_parse_file_name(name, label, expected):
  assert sources.parse_file_name(name, label) == expected


def test_parse_file_name_rejects_a_file_in_the_wrong_class():
  with pytest.raises(sources.LayoutError, match='person3_virus_1.jpeg.*NORMAL folder'):
    sources.parse_file_name('person3_virus_1.jpeg', 'NORMAL')
