"""One trial: the ordered pipeline of steps (``pipeline``), what every trial of a study shares
(``context``), distilled students cached by digest (``students``) and the torch model saved as
a program (``programs``). Knows no study.
"""
